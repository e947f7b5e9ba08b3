"""Celery tasks: thin wrappers that hand a job id to ``worker.pipeline``."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import current_app, shared_task
from celery.signals import worker_process_init, worker_ready

from jobqueue import TASK_RUN_JOB

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _runner():
    # Built lazily inside the worker's child process, after fork: torch, the database engine
    # and CUDA are never initialised in the parent.
    from records import db
    from worker.pipeline import JobRunner

    settings = current_app.conf.zscl_settings
    settings.ensure_dirs()
    engine = db.make_engine(settings.database_url)
    db.create_all(engine)
    return JobRunner(settings, db.make_session_factory(engine), settings.torch_device)


@worker_process_init.connect
def _tune(**_kwargs) -> None:
    from zscl_core.runtime import tune_process

    settings = current_app.conf.zscl_settings
    tune_process(torch_threads=settings.torch_threads, tune_malloc=settings.tune_malloc)
    _allow_loader_processes()


def _allow_loader_processes() -> None:
    """Let this pool process start DataLoader processes (a job's image decoding, see
    ``Settings.loader_workers``). The prefork pool marks its processes daemonic, and
    multiprocessing refuses children to a daemonic process (billiard and multiprocessing each
    keep the flag). Orphans cannot follow: torch's loader processes exit by themselves once
    their parent is gone (their watchdog polls it)."""
    import multiprocessing

    import billiard

    for process in (multiprocessing.current_process(), billiard.current_process()):
        process._config["daemon"] = False


@worker_ready.connect
def _reap_on_start(**_kwargs) -> None:
    """Jobs left running by a worker that died are requeued (while they have retries left) or
    failed before new work starts; a version it was saving, half-written, is removed (one that
    a live worker is saving is locked, and kept). In embedded mode, the queued jobs are sent
    again: the one a killed worker had taken has no message left (``jobqueue.queued_jobs``)."""
    from records import db, jobs
    from jobqueue import queued_jobs, send_requeued
    from zscl_core.tempdirs import remove_unlocked_temp_dirs

    settings = current_app.conf.zscl_settings
    remove_unlocked_temp_dirs(settings.versions_dir)
    engine = db.make_engine(settings.database_url)
    db.create_all(engine)
    sessions = db.make_session_factory(engine)
    stranded = [] if settings.distributed else queued_jobs(sessions)
    with sessions() as session:
        reaped = jobs.reap_stale(session, settings.job_heartbeat_timeout_s, settings.job_max_retries)
    send_requeued(current_app, sessions, stranded + reaped.requeued)
    if reaped.failed:
        logger.warning("failed %d job(s) whose worker was lost: %s", len(reaped.failed), reaped.failed)


@shared_task(name=TASK_RUN_JOB)
def run_job(job_id: str) -> str:
    """Train, evaluate, gate and maybe promote one job; returns its final state."""
    return _runner().run(job_id)

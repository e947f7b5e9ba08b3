"""jobqueue: the contract between the API and the workers: the update queue's name, the task
name the API sends and the worker defines, and the Celery application, built from settings.
It sits between ``records`` (which it reads jobs from) and the two edges, ``service`` and
``worker``, which both import it and never each other.

Embedded mode uses kombu's SQLAlchemy transport over a SQLite file (real Celery, no server);
distributed mode uses Redis. Jobs are long and precious, so: late acks (a message is acked only
after the task returns), prefetch 1 (an idle worker never hoards queued jobs), a broker
visibility timeout longer than the hard time limit (Redis does not redeliver a job that is still
running), and a soft time limit that ends the job cleanly before the hard kill.

This module imports no torch and builds no app at import, and names no task module: the API
builds its app here to send jobs by task name (:data:`TASK_RUN_JOB`); the worker entry point,
``worker.app``, builds its app here with the modules that define the tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from records import jobs
from records.settings import Settings
from records.tables import Job, JobState

__all__ = ["create_celery", "send_job", "send_requeued", "queued_jobs", "TASK_RUN_JOB", "QUEUE"]

logger = logging.getLogger(__name__)

TASK_RUN_JOB = "zscl.run_job"
QUEUE = "zscl-updates"


def _transport_options(settings: Settings) -> dict:
    # Redis redelivers an unacked message after the visibility timeout: it must outlast the
    # longest job. kombu's SQLAlchemy transport has no such option (it passes options to the
    # database engine), so embedded mode gets none.
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.job_hard_time_limit_s + 600}
    return {}


def create_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app configured for update jobs on ``settings.broker_url``.

    Args:
        settings: the broker, the time limits; kept as ``app.conf.zscl_settings`` for the tasks.
        include: the modules that define the tasks, which a worker imports when it starts (the
            worker's entry point passes its own). A process that only sends jobs passes none:
            :func:`send_job` sends by task name.
    """
    app = Celery("zscl", broker=settings.broker_url, include=list(include))
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        task_time_limit=settings.job_hard_time_limit_s,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_concurrency=1,  # one training process per worker (per GPU)
        worker_hijack_root_logger=False,
    )
    app.conf.zscl_settings = settings
    return app


def send_job(celery: Celery, job_id: str) -> None:
    """Put job ``job_id`` on the update queue, for a worker to run: sent by task name
    (:data:`TASK_RUN_JOB`, defined by ``worker.tasks``), so the sender needs no task module."""
    celery.send_task(TASK_RUN_JOB, args=[job_id], queue=QUEUE)


def send_requeued(celery: Celery, sessions: sessionmaker[Session], job_ids: list[str]) -> None:
    """Send again the jobs :func:`records.jobs.reap_stale` requeued; one the broker does not take
    is failed, never left queued with no message to run it."""
    for job_id in job_ids:
        try:
            send_job(celery, job_id)
        except Exception as exc:  # noqa: BLE001 - kombu raises many types; the job must not dangle
            logger.error("could not requeue job %s: %s", job_id, exc)
            error = {"type": "BrokerUnavailable", "message": f"its worker was lost and it could not "
                     f"be queued again ({exc}); check ZSCL_BROKER_URL and resubmit the job"}
            with sessions() as session:
                jobs.transition(session, job_id, JobState.FAILED, error=error)


def queued_jobs(sessions: sessionmaker[Session]) -> list[str]:
    """The jobs waiting to run, oldest first.

    Embedded mode sends them all again when its worker starts (``worker.tasks``): kombu's
    SQLAlchemy transport marks a message delivered when a worker takes it and never delivers it
    again, so a worker killed after it took a job and before it marked it running (the first
    job of a pool process waits seconds for torch to load) left that job queued with no message
    to run it. A job sent twice runs once: a worker starts only a job that is still queued
    (``worker.pipeline.JobRunner.run``).
    """
    with sessions() as session:
        return list(session.scalars(select(Job.id).where(Job.state == JobState.QUEUED)
                                    .order_by(Job.created_at)))

"""Submitting update jobs: validate the request, record the job, enqueue it on Celery."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from zscl_core import GatePolicy, UpdateConfig

from . import jobs
from .datasets import get_dataset
from .errors import InvalidRequest, NotReady
from .job_schemas import JobIn
from .jobs_db import Job
from .settings import Settings

__all__ = ["submit_job"]

logger = logging.getLogger(__name__)


def submit_job(sessions: sessionmaker[Session], settings: Settings, celery: Celery, body: JobIn,
               *, idempotency_key: str | None) -> tuple[Job, bool]:
    """Validate and enqueue; returns (job, created). Invalid values raise before anything is kept."""
    config = UpdateConfig.from_dict({**body.hparams, "method": body.method})  # ConfigError -> 422
    try:
        GatePolicy(**body.gate)
    except TypeError as exc:
        raise InvalidRequest(f"unknown gate field ({exc}); use min_new_task_gain, max_mean_drop, "
                             f"max_dataset_drop, max_drift") from exc
    hparams = {k: v for k, v in config.to_dict().items() if k != "method"}
    with sessions() as session:
        dataset = get_dataset(session, body.dataset_id)
        if dataset.is_suite:
            raise InvalidRequest(f"dataset '{dataset.id}' is a zero-shot suite; suites are never "
                                 f"trained on (PUT /v1/datasets/{dataset.id}/suite to change that)")
        if dataset.n_train == 0:
            raise InvalidRequest(f"dataset '{dataset.id}' has no train images (it was uploaded as a "
                                 f"bare test/ split), so it can only be a zero-shot suite (PUT "
                                 f"/v1/datasets/{dataset.id}/suite); to train, upload class folders "
                                 f"or train/ + test/")
        job, created = jobs.create_job(session, dataset_id=dataset.id, method=config.method,
                                       hparams=hparams, gate=body.gate,
                                       idempotency_key=idempotency_key)
    if created:
        from worker.celery_app import QUEUE, TASK_RUN_JOB

        try:
            celery.send_task(TASK_RUN_JOB, args=[job.id], queue=QUEUE)
        except Exception as exc:  # noqa: BLE001 - kombu raises many types; the job must not dangle
            error = {"type": "BrokerUnavailable", "message": f"could not enqueue the job: {exc}"}
            with sessions() as session:
                jobs.transition(session, job.id, "failed", error=error)
            raise NotReady(f"the job queue is unreachable ({exc}); check ZSCL_BROKER_URL and "
                           f"retry") from exc
        logger.info("job %s queued (%s on dataset %s)", job.id, job.method, job.dataset_id)
    return job, created

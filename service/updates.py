"""Submitting update jobs: validate the request, record the job, enqueue it on Celery."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from records import jobs
from records.datasets import get_dataset
from records.errors import InvalidRequest, NotReady
from records.settings import Settings
from records.tables import Job, JobState
from zscl_core import GatePolicy, UpdateConfig

from .job_schemas import GateIn, HParamsIn, JobIn

__all__ = ["submit_job", "job_settings"]

logger = logging.getLogger(__name__)


def job_settings(method: str, hparams: dict[str, Any], gate: dict[str, Any]
                 ) -> tuple[UpdateConfig, dict[str, Any]]:
    """Validate a job's settings; returns its config and the hyper-parameters to store.

    Types are checked by the models generated from ``UpdateConfig`` and ``GatePolicy``
    (:mod:`service.job_schemas`), ranges by the dataclasses themselves; either failure is an
    ``InvalidRequest`` or a ``ConfigError`` (both 422) naming the field.

    The stored hyper-parameters are every ``UpdateConfig`` field but the method, defaults filled
    in now (the derived warm-up too), so a job runs with the defaults of the day it was
    submitted. Shared by the API and the product-path benchmark (``zscl_bench.updates``), so both
    run exactly what a user's job runs.
    """
    config = UpdateConfig.from_dict({**_typed(HParamsIn, hparams, "hparams"), "method": method})
    GatePolicy(**_typed(GateIn, gate, "gate"))
    stored = {k: v for k, v in config.to_dict().items() if k != "method"}
    stored["warmup_steps"] = config.warmup
    return config, stored


def _typed(model: type[BaseModel], values: Any, what: str) -> dict[str, Any]:
    """``values`` checked against ``model``: the keys given, with their types checked."""
    if not isinstance(values, dict):
        raise InvalidRequest(f"{what} must be an object of field: value, got {values!r}")
    try:
        return model.model_validate(values).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(map(str, error["loc"]))
            if error["type"] == "extra_forbidden" and field == "method":
                problems.append(f"{what}.method: the method is the job's own 'method' field")
            elif error["type"] == "extra_forbidden":
                problems.append(f"{what}.{field} is not a field (known: "
                                f"{', '.join(model.model_fields)})")
            else:
                problems.append(f"{what}.{field}: {error['msg']}, got {error['input']!r:.80}")
        raise InvalidRequest("; ".join(problems)) from exc


def submit_job(sessions: sessionmaker[Session], settings: Settings, celery: Celery, body: JobIn,
               *, idempotency_key: str | None, trigger: dict[str, Any] | None = None
               ) -> tuple[Job, bool]:
    """Validate and enqueue; returns (job, created). Invalid values raise before anything is kept.

    ``trigger`` records what created a job no user posted (an auto-update policy)."""
    config, hparams = job_settings(body.method, body.hparams, body.gate)
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
                                       idempotency_key=idempotency_key, trigger=trigger)
    if created:
        from jobqueue import send_job

        try:
            send_job(celery, job.id)
        except Exception as exc:  # noqa: BLE001 - kombu raises many types; the job must not dangle
            error = {"type": "BrokerUnavailable", "message": f"could not enqueue the job: {exc}"}
            with sessions() as session:
                jobs.transition(session, job.id, JobState.FAILED, error=error)
            raise NotReady(f"the job queue is unreachable ({exc}); check ZSCL_BROKER_URL and "
                           f"retry") from exc
        logger.info("job %s queued (%s on dataset %s)", job.id, job.method, job.dataset_id)
    return job, created

"""Job records: creation (idempotent), state transitions, progress, events, cancel, reaping.

Shared by the API and the worker; no web or queue imports. Every state change is a conditional
UPDATE (``WHERE state IN allowed``), so two processes racing on one job cannot both win.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import Conflict, NotFound
from .tables import TERMINAL_STATES, Job, JobEvent, utcnow

__all__ = ["create_job", "get_job", "list_jobs", "add_event", "list_events", "transition",
           "request_cancel", "record_progress", "heartbeat", "reap_stale", "job_summary", "ALLOWED"]

logger = logging.getLogger(__name__)

ALLOWED: dict[str, frozenset[str]] = {
    "running": frozenset({"queued"}),
    "evaluating": frozenset({"running"}),
    "cancelling": frozenset({"running", "evaluating"}),
    "cancelled": frozenset({"queued", "running", "evaluating", "cancelling"}),
    "succeeded": frozenset({"evaluating", "cancelling"}),
    "rejected": frozenset({"evaluating", "cancelling"}),
    "failed": frozenset({"queued", "running", "evaluating", "cancelling"}),
}


def create_job(session: Session, *, dataset_id: str, method: str, hparams: dict[str, Any],
               gate: dict[str, Any], idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Insert a queued job; with an idempotency key seen before, return that job instead.

    Returns (job, created).
    """
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            return existing, False
    job = Job(id=uuid.uuid4().hex, idempotency_key=idempotency_key, dataset_id=dataset_id,
              method=method, hparams=hparams, gate=gate, state="queued",
              total_steps=int(hparams.get("steps", 0)))
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same key won the insert
        session.rollback()
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        return existing, False
    add_event(session, job.id, "state", {"state": "queued"})
    return job, True


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job '{job_id}' does not exist; GET /v1/jobs lists the jobs")
    session.refresh(job)
    return job


def list_jobs(session: Session, *, limit: int = 50, offset: int = 0) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.created_at.desc())
                                .limit(limit).offset(offset)))


def add_event(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, data=data))
    session.commit()


def list_events(session: Session, job_id: str, *, after: int = 0, limit: int = 100) -> list[JobEvent]:
    """Events with id > ``after``, oldest first (cursor pagination)."""
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
                                .order_by(JobEvent.id).limit(limit)))


def transition(session: Session, job_id: str, state: str, **fields: Any) -> bool:
    """Move a job to ``state`` if its current state allows it; returns whether it moved."""
    allowed = ALLOWED[state]
    values: dict[str, Any] = {"state": state, **fields}
    now = utcnow()
    if state == "running":
        values.setdefault("started_at", now)
        values.setdefault("heartbeat_at", now)
    if state in TERMINAL_STATES:
        values.setdefault("finished_at", now)
    result = session.execute(update(Job).where(Job.id == job_id, Job.state.in_(allowed))
                             .values(**values))
    session.commit()
    moved = result.rowcount == 1
    if moved:
        data = {"state": state}
        if fields.get("error"):
            data["error"] = fields["error"]
        add_event(session, job_id, "state", data)
    return moved


def request_cancel(session: Session, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next check."""
    job = get_job(session, job_id)
    if job.state in TERMINAL_STATES:
        raise Conflict(f"job '{job_id}' already ended ({job.state}); nothing to cancel")
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.commit()
    # a queued job ends here (the worker skips it); a running one stops at its next check
    moved = session.execute(update(Job).where(Job.id == job_id, Job.state == "queued")
                            .values(state="cancelled", finished_at=utcnow()))
    session.commit()
    if moved.rowcount == 1:
        add_event(session, job_id, "state", {"state": "cancelled"})
    else:
        transition(session, job_id, "cancelling")
    return get_job(session, job_id)


def record_progress(session: Session, job_id: str, *, step: int, total: int,
                    losses: dict[str, float], eta_s: float | None, event: bool) -> bool:
    """Store progress and a heartbeat; returns whether a cancel was requested."""
    session.execute(update(Job).where(Job.id == job_id).values(
        step=step, total_steps=total, losses=losses, eta_s=eta_s, heartbeat_at=utcnow()))
    session.commit()
    if event:
        add_event(session, job_id, "progress", {"step": step, "total": total, "losses": losses,
                                                "eta_s": eta_s})
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def heartbeat(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
    session.commit()


def reap_stale(session: Session, timeout_s: float) -> list[str]:
    """Fail jobs whose worker stopped sending heartbeats (killed, machine lost)."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=timeout_s)
    stale = []
    for job in session.scalars(select(Job).where(Job.state.in_(("running", "evaluating",
                                                                "cancelling")))):
        beat = job.heartbeat_at
        if beat is not None and beat.tzinfo is None:  # SQLite drops the zone
            beat = beat.replace(tzinfo=timezone.utc)
        if beat is None or beat < cutoff:
            stale.append(job.id)
    reaped = []
    for job_id in stale:
        error = {"type": "WorkerLost", "message": f"no heartbeat from the worker for {timeout_s:.0f} s "
                 "(killed or lost); the served model is unchanged; resubmit the job"}
        if transition(session, job_id, "failed", error=error):
            logger.warning("job %s failed: worker lost", job_id)
            reaped.append(job_id)
    return reaped


def job_summary(job: Job) -> dict[str, Any]:
    """The API's view of a job."""
    progress = job.step / job.total_steps if job.total_steps else 0.0
    return {"id": job.id, "state": job.state, "dataset_id": job.dataset_id, "method": job.method,
            "hparams": job.hparams, "gate": job.gate, "step": job.step,
            "total_steps": job.total_steps, "progress": round(progress, 4), "losses": job.losses,
            "eta_s": job.eta_s, "metrics": job.metrics, "report": job.report, "error": job.error,
            "base_version": job.base_version, "candidate_version": job.candidate_version,
            "cancel_requested": job.cancel_requested, "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at}

"""Job records: creation (idempotent), state transitions, progress, events, cancel, reaping
(a job whose worker was lost is requeued while it has retries left, else failed).

Shared by the API and the worker; no web or queue imports. Every state change is a conditional
UPDATE (``WHERE state IN allowed``), so two processes racing on one job cannot both win, and it
commits in one transaction with its event: a crash or a failed write leaves both or neither, never
a state without its event.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .errors import Conflict, NotFound
from .tables import TERMINAL_STATES, Dataset, Job, JobEvent, JobState, utcnow

__all__ = ["SessionFactory", "create_job", "get_job", "list_jobs", "add_event", "list_events",
           "transition", "stage_transition", "request_cancel", "record_progress", "heartbeat",
           "reap_stale", "Reaped", "retries_of", "job_summary", "ALLOWED", "JobState"]

logger = logging.getLogger(__name__)

SessionFactory = sessionmaker[Session]
"""What opens the sessions of a process that follows jobs (the worker's runner, its heartbeat)."""

_S = JobState
# the states each state may be entered from
ALLOWED: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.EVALUATING}),  # requeued after its worker was lost
    _S.RUNNING: frozenset({_S.QUEUED}),
    _S.EVALUATING: frozenset({_S.RUNNING}),
    _S.CANCELLING: frozenset({_S.RUNNING, _S.EVALUATING}),
    _S.CANCELLED: frozenset({_S.QUEUED, _S.RUNNING, _S.EVALUATING, _S.CANCELLING}),
    _S.SUCCEEDED: frozenset({_S.EVALUATING, _S.CANCELLING}),
    _S.REJECTED: frozenset({_S.EVALUATING, _S.CANCELLING}),
    _S.FAILED: frozenset({_S.QUEUED, _S.RUNNING, _S.EVALUATING, _S.CANCELLING}),
}


@contextlib.contextmanager
def _transaction(session: Session) -> Iterator[None]:
    """Commit what the block wrote, or roll all of it back if the block or the commit fails
    (the session stays usable)."""
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _missing_dataset(dataset_id: str) -> NotFound:
    return NotFound.of("dataset", dataset_id)


def create_job(session: Session, *, dataset_id: str, method: str, hparams: dict[str, Any],
               gate: dict[str, Any], idempotency_key: str | None = None,
               trigger: dict[str, Any] | None = None) -> tuple[Job, bool]:
    """Insert a queued job and its "queued" event; with an idempotency key seen before, return
    that job instead. ``trigger`` records what created a job that no user posted.

    Returns (job, created).

    Raises:
        NotFound: the dataset does not exist (or was deleted meanwhile).
    """
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            return existing, False
    if session.get(Dataset, dataset_id) is None:
        raise _missing_dataset(dataset_id)
    job = Job(id=uuid.uuid4().hex, idempotency_key=idempotency_key, dataset_id=dataset_id,
              method=method, hparams=hparams, gate=gate, state=JobState.QUEUED,
              total_steps=int(hparams.get("steps", 0)), trigger=trigger)
    try:
        with _transaction(session):
            session.add(job)
            session.flush()  # the job row first: the event refers to it
            session.add(JobEvent(job_id=job.id, kind="state", data={"state": JobState.QUEUED}))
    except IntegrityError:
        # only a concurrent request with the same key is answered with its job; anything else
        # (the dataset deleted meanwhile...) is not that, and must not return an unrelated job
        existing = idempotency_key and session.scalar(
            select(Job).where(Job.idempotency_key == idempotency_key))
        if existing:
            return existing, False
        if session.get(Dataset, dataset_id) is None:
            raise _missing_dataset(dataset_id) from None
        raise
    return job, True


def get_job(session: Session, job_id: str) -> Job:
    """The job ``job_id``, freshly read; NotFound if there is none."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound.of("job", job_id)
    session.refresh(job)
    return job


def list_jobs(session: Session, *, limit: int = 50, offset: int = 0) -> list[Job]:
    """A page of jobs, newest first."""
    return list(session.scalars(select(Job).order_by(Job.created_at.desc())
                                .limit(limit).offset(offset)))


def add_event(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> None:
    """Record one event of a job (committed at once)."""
    with _transaction(session):
        session.add(JobEvent(job_id=job_id, kind=kind, data=data))


def list_events(session: Session, job_id: str, *, after: int = 0, limit: int = 100) -> list[JobEvent]:
    """Events with id > ``after``, oldest first (cursor pagination)."""
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
                                .order_by(JobEvent.id).limit(limit)))


def transition(session: Session, job_id: str, state: JobState, **fields: Any) -> bool:
    """Move a job to ``state`` if its current state allows it; returns whether it moved."""
    with _transaction(session):
        return stage_transition(session, job_id, state, **fields)


def stage_transition(session: Session, job_id: str, state: JobState, **fields: Any) -> bool:
    """:func:`transition`'s writes (the conditional UPDATE and its event), left uncommitted: for
    a caller that commits them with other writes in one transaction
    (``records.registry.promote``). Returns whether the job moved."""
    values: dict[str, Any] = {"state": state, **fields}
    now = utcnow()
    if state == JobState.RUNNING:
        values.setdefault("started_at", now)
        values.setdefault("heartbeat_at", now)
    if state in TERMINAL_STATES:
        values.setdefault("finished_at", now)
    moved = _move(session, job_id, ALLOWED[state], values)
    if moved:
        data = {"state": state}
        if fields.get("error"):
            data["error"] = fields["error"]
        session.add(JobEvent(job_id=job_id, kind="state", data=data))
    return moved


def _move(session: Session, job_id: str, allowed, values: dict[str, Any], *conditions) -> bool:
    """The conditional UPDATE of a state change, uncommitted; whether it matched."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.state.in_(allowed), *conditions)
                             .values(**values))
    return result.rowcount == 1


def request_cancel(session: Session, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next check."""
    job = get_job(session, job_id)
    if job.state in TERMINAL_STATES:
        raise Conflict(f"job '{job_id}' already ended ({job.state}); nothing to cancel")
    # the flag, the state and its event: one transaction. A queued job ends here (the worker
    # skips it); a running one stops at its next check.
    with _transaction(session):
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
        if _move(session, job_id, {JobState.QUEUED},
                 {"state": JobState.CANCELLED, "finished_at": utcnow()}):
            session.add(JobEvent(job_id=job_id, kind="state", data={"state": JobState.CANCELLED}))
        elif _move(session, job_id, ALLOWED[JobState.CANCELLING], {"state": JobState.CANCELLING}):
            session.add(JobEvent(job_id=job_id, kind="state", data={"state": JobState.CANCELLING}))
    return get_job(session, job_id)


def record_progress(session: Session, job_id: str, *, step: int, total: int,
                    losses: dict[str, float], eta_s: float | None, event: bool) -> bool:
    """Store progress and a heartbeat; returns whether a cancel was requested."""
    with _transaction(session):
        session.execute(update(Job).where(Job.id == job_id).values(
            step=step, total_steps=total, losses=losses, eta_s=eta_s, heartbeat_at=utcnow()))
        if event:
            session.add(JobEvent(job_id=job_id, kind="progress", data={
                "step": step, "total": total, "losses": losses, "eta_s": eta_s}))
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def heartbeat(session: Session, job_id: str) -> None:
    """Record that the job's worker is alive now (see :func:`reap_stale`)."""
    with _transaction(session):
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))


@dataclass(frozen=True)
class Reaped:
    """What :func:`reap_stale` did: the jobs put back in the queue (to be sent to it again by
    the caller, which has the queue) and the jobs failed."""
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def reap_stale(session: Session, timeout_s: float, max_retries: int = 0) -> Reaped:
    """Jobs whose worker stopped sending heartbeats (killed, restarted, machine lost): requeued
    to run again from their start while they have retries left, else failed. A job whose cancel
    was requested is never retried. Each change applies only if the heartbeat is still the stale
    one read here: a job a worker has just started again (another reaper was first) is left."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=timeout_s)
    stale = []
    working = (JobState.RUNNING, JobState.EVALUATING, JobState.CANCELLING)
    for job in session.scalars(select(Job).where(Job.state.in_(working))):
        beat = job.heartbeat_at
        if beat is not None and beat.tzinfo is None:  # SQLite drops the zone
            beat = beat.replace(tzinfo=timezone.utc)
        if beat is None or beat < cutoff:
            stale.append((job.id, job.cancel_requested, job.heartbeat_at))
    reaped = Reaped()
    lost = f"no heartbeat from the worker for {timeout_s:.0f} s (killed or lost)"
    for job_id, cancel_requested, beat in stale:
        retries = retries_of(session, job_id)
        if not cancel_requested and retries < max_retries:
            event = {"retry": retries + 1, "max_retries": max_retries, "reason": lost}
            if _reap(session, job_id, JobState.QUEUED, _FROM_START, event, beat):
                logger.warning("job %s requeued (retry %d of %d): worker lost", job_id, retries + 1,
                               max_retries)
                reaped.requeued.append(job_id)
            continue
        spent = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
        error = {"type": "WorkerLost", "message": f"{lost}{spent}; the served model is unchanged; "
                 "resubmit the job"}
        if _reap(session, job_id, JobState.FAILED, {"error": error, "finished_at": utcnow()},
                 {"error": error}, beat):
            logger.warning("job %s failed: worker lost", job_id)
            reaped.failed.append(job_id)
    return reaped


# a requeued job runs from its start: the progress of the lost run is cleared
_FROM_START = {"step": 0, "losses": {}, "eta_s": None, "started_at": None, "heartbeat_at": None,
               "base_version": None}


def _reap(session: Session, job_id: str, state: JobState, values: dict[str, Any],
          event: dict[str, Any], beat) -> bool:
    """Move a stale job to ``state`` with its event, if its heartbeat is still ``beat``."""
    unchanged = Job.heartbeat_at.is_(None) if beat is None else Job.heartbeat_at == beat
    with _transaction(session):
        moved = _move(session, job_id, ALLOWED[state], {"state": state, **values}, unchanged)
        if moved:
            session.add(JobEvent(job_id=job_id, kind="state", data={"state": state, **event}))
    return moved


def retries_of(session: Session, job_id: str) -> int:
    """How many times the job was requeued after losing its worker (its events say so)."""
    events = session.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id,
                                                         JobEvent.kind == "state"))
    return sum(1 for data in events if data.get("retry"))


def job_summary(job: Job) -> dict[str, Any]:
    """The API's view of a job."""
    progress = job.step / job.total_steps if job.total_steps else 0.0
    return {"id": job.id, "state": job.state, "dataset_id": job.dataset_id, "method": job.method,
            "hparams": job.hparams, "gate": job.gate, "step": job.step,
            "total_steps": job.total_steps, "progress": round(progress, 4), "losses": job.losses,
            "eta_s": job.eta_s, "metrics": job.metrics, "report": job.report, "error": job.error,
            "base_version": job.base_version, "candidate_version": job.candidate_version,
            "cancel_requested": job.cancel_requested, "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at, "trigger": job.trigger}

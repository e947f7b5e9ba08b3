"""The version registry and the durable serving pointer.

Used by the API and by the worker (no web imports). The pointer is one database row
(``ServingPointer``); moving it is a compare-and-swap, so that a candidate trained from an old
version never overwrites a newer promotion or a manual rollback. A job's candidate is promoted by
:func:`promote`: the version row, the pointer, the task's label set and the job's final state
commit in one transaction. After a pointer change the caller calls :func:`notify`, which tells
the other API processes (Redis pub/sub in distributed mode); each process also re-reads the
pointer periodically, so a lost message only delays convergence.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zscl_core import list_versions as list_saved_versions

from . import jobs
from .errors import UnknownVersion
from .label_sets import LabelSetUpdate, stage_label_set
from .tables import JobState, ModelVersion, ServingPointer, utcnow

__all__ = ["CHANNEL", "UNCONDITIONAL", "register_version", "get_version", "lineage",
           "list_registered", "get_serving", "activate", "promote", "Promotion", "notify",
           "register_saved_versions"]

logger = logging.getLogger(__name__)

CHANNEL = "zscl:serving"
POINTER_ID = 1


class _Unconditional:
    def __repr__(self) -> str:
        return "UNCONDITIONAL"


UNCONDITIONAL: Any = _Unconditional()
"""Default of ``activate(expected_current=...)``: swap whatever is served now."""


def register_version(session: Session, version_id: str, path: str | Path, parent: str | None = None,
                     metadata: dict[str, Any] | None = None) -> ModelVersion:
    """Record a saved version (idempotent: an existing row is returned unchanged).

    ``metadata`` keys ``source``, ``method``, ``metrics`` and ``report`` go to their columns;
    any other keys are kept under ``report``.
    """
    existing = session.get(ModelVersion, version_id)
    if existing is not None:
        return existing
    row = _version_row(version_id, path, parent, metadata)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # another process registered it first
        session.rollback()
        return session.get(ModelVersion, version_id)
    logger.info("registered version %s (parent %s)", version_id, parent)
    return row


def _version_row(version_id: str, path: str | Path, parent: str | None,
                 metadata: dict[str, Any] | None) -> ModelVersion:
    meta = dict(metadata or {})
    created = meta.pop("created_at", None)
    row = ModelVersion(id=version_id, parent=parent, path=str(path),
                       source=meta.pop("source", None), method=meta.pop("method", None),
                       metrics=meta.pop("metrics", None) or {},
                       report={**(meta.pop("report", None) or {}), **meta})
    if isinstance(created, (int, float)):
        row.created_at = datetime.fromtimestamp(created, timezone.utc)
    return row


def register_saved_versions(session: Session, versions_dir: Path) -> list[str]:
    """Register every complete version directory under ``versions_dir`` that the DB lacks."""
    known = set(session.scalars(select(ModelVersion.id)))
    added = []
    for zscl in list_saved_versions(versions_dir):
        if zscl["version"] not in known:
            meta = dict(zscl.get("metadata") or {})
            meta.setdefault("created_at", zscl.get("created_at"))
            register_version(session, zscl["version"], versions_dir / zscl["version"],
                             zscl.get("parent"), meta)
            added.append(zscl["version"])
    return added


def get_version(session: Session, version_id: str) -> ModelVersion:
    """The registered model version ``version_id``; UnknownVersion if there is none."""
    row = session.get(ModelVersion, version_id)
    if row is None:
        raise UnknownVersion(version_id)
    return row


def lineage(session: Session, version_id: str) -> list[ModelVersion]:
    """The version and its ancestors, newest first; the last is the original model (the root of
    every update, ZSCL's teacher).

    Raises:
        UnknownVersion: ``version_id`` is not registered.
    """
    row = get_version(session, version_id)
    chain, seen = [row], {row.id}
    while row.parent:
        parent = session.get(ModelVersion, row.parent)
        if parent is None or parent.id in seen:
            break
        seen.add(parent.id)
        chain.append(parent)
        row = parent
    return chain


def list_registered(session: Session) -> list[ModelVersion]:
    """Every registered model version, oldest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at)))


def get_serving(session: Session) -> tuple[str | None, int]:
    """(served version id, generation); (None, 0) before the first activation."""
    served = _pointer(session)
    session.rollback()  # end the read transaction: the next call must see new commits
    return served


def _pointer(session: Session) -> tuple[str | None, int]:
    row = session.execute(select(ServingPointer.version_id, ServingPointer.generation)
                          .where(ServingPointer.id == POINTER_ID)).first()
    return (row[0], row[1]) if row else (None, 0)


def activate(session: Session, version_id: str, expected_current: str | None = UNCONDITIONAL) -> bool:
    """Point serving at ``version_id``; atomic compare-and-swap when ``expected_current`` is given.

    Args:
        session: a database session (committed here).
        version_id: a registered version.
        expected_current: the version the caller believes is served; the swap happens only if it
            still is. ``None`` means "only if nothing is served yet". Omit it to swap
            unconditionally (an operator's activate or rollback).

    Returns:
        True when the pointer now names ``version_id`` by this call, False when the condition
        did not hold (someone else activated in between).

    Raises:
        UnknownVersion: ``version_id`` is not registered.
    """
    get_version(session, version_id)
    conditional = expected_current is not UNCONDITIONAL
    swapped = _swap(session, version_id, expected_current)
    if not swapped and (not conditional or expected_current is None):
        try:  # no pointer row yet: the first activation creates it
            session.execute(insert(ServingPointer).values(id=POINTER_ID, version_id=version_id,
                                                          generation=1, updated_at=utcnow()))
            swapped = True
        except IntegrityError:
            session.rollback()
            if not conditional:  # lost a race to create the row: now it exists, swap it
                return activate(session, version_id)
            return False
    session.commit()
    if swapped:
        logger.info("serving pointer -> %s", version_id)
    return swapped


def _swap(session: Session, version_id: str, expected_current: str | None) -> bool:
    """The pointer row's UPDATE to ``version_id`` (if it still names ``expected_current``, unless
    that is UNCONDITIONAL), uncommitted; whether it matched. Creates no row."""
    stmt = (update(ServingPointer).where(ServingPointer.id == POINTER_ID)
            .values(version_id=version_id, generation=ServingPointer.generation + 1,
                    updated_at=utcnow()))
    if expected_current is not UNCONDITIONAL:
        stmt = stmt.where(ServingPointer.version_id == expected_current)
    return session.execute(stmt).rowcount == 1


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did."""

    promoted: bool  #: the pointer moved to the candidate, and the job succeeded
    job_state: str  #: the job's state after the call
    served: str | None  #: the version the pointer names after the call
    generation: int  #: the pointer's generation after the call


def promote(session: Session, job_id: str, version_id: str, path: str | Path, *, parent: str,
            metrics: dict[str, Any], report: dict[str, Any],
            label_set: LabelSetUpdate | None = None) -> Promotion:
    """Register a job's candidate and serve it if ``parent`` still is: one transaction.

    The writes, committed together or not at all: the version row; the pointer, moved from
    ``parent`` to the candidate (compare-and-swap); ``label_set``; the job's state with its
    event, "succeeded". If the pointer no longer names ``parent`` (an operator activated another
    version, or another job was promoted, meanwhile), the version row is written and the job is
    "rejected" as superseded instead, the pointer and the label set untouched. So no crash or
    failed write leaves the pointer on the candidate with the job unfinished: a job that is not
    finished is retried after a crash, and would train again on its own result.

    A job that is no longer evaluating (its worker was taken for lost and the job requeued or
    failed meanwhile) is left as it is, and nothing is served: the candidate is only registered.

    Args:
        session: a database session (committed here; rolled back if a write fails).
        job_id: an evaluating (or cancelling) job.
        version_id: the candidate, saved in the version store under ``path`` before this call.
        path: its version directory.
        parent: the version the job trained from.
        metrics: the job's metrics, kept on the job and on the version.
        report: the gate's report, likewise.
        label_set: written only if the candidate is served (a new task registers its classes).

    Returns:
        What happened (:class:`Promotion`); the caller notifies the API processes
        (:func:`notify`) when ``promoted``.
    """
    job = jobs.get_job(session, job_id)
    meta = {"source": f"job:{job_id}", "method": job.method, "metrics": metrics, "report": report}
    try:
        outcome = _stage_promotion(session, job_id, _version_row(version_id, path, parent, meta),
                                   {"candidate_version": version_id, "metrics": metrics,
                                    "report": report}, label_set)
        if outcome is not None:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    if outcome is None:
        session.rollback()
        register_version(session, version_id, path, parent, meta)
        state = jobs.get_job(session, job_id).state
        logger.warning("job %s is %s, no longer evaluating: its candidate %s is registered, not "
                       "served", job_id, state, version_id)
        return Promotion(False, state, *get_serving(session))
    if outcome.promoted:
        logger.info("job %s succeeded: serving pointer -> %s (generation %d)", job_id,
                    version_id, outcome.generation)
    return outcome


def _stage_promotion(session: Session, job_id: str, row: ModelVersion, fields: dict[str, Any],
                     label_set: LabelSetUpdate | None) -> Promotion | None:
    """:func:`promote`'s writes, uncommitted; None if the job was no longer evaluating.
    ``fields``: what the job row records of its candidate."""
    if session.get(ModelVersion, row.id) is None:
        session.add(row)
        session.flush()  # the pointer row refers to it
    swapped = _swap(session, row.id, row.parent)
    served, generation = _pointer(session)
    if swapped:
        if label_set is not None:
            stage_label_set(session, label_set)
        state = JobState.SUCCEEDED
    else:
        state = JobState.REJECTED
        fields = {**fields, "report": {**fields["report"], "superseded": (
            f"the served version changed from {row.parent} to {served} while this job ran; "
            f"candidate {row.id} was saved but not promoted over it (activate it to serve it "
            f"anyway, or rerun the job)")}}
    if not jobs.stage_transition(session, job_id, state, **fields):
        return None
    return Promotion(swapped, state, served, generation)


def notify(redis_url: str | None, version_id: str, generation: int, *,
           channel: str = CHANNEL, timeout_s: float = 2.0) -> bool:
    """Publish a pointer change on Redis pub/sub (distributed mode).

    Returns True when published. In embedded mode (no ``redis_url``) or when Redis is down it
    returns False: the receivers' periodic reconcile still picks the change up.
    """
    if not redis_url:
        return False
    import redis  # lazy: embedded mode never needs it

    message = json.dumps({"version": version_id, "generation": generation})
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s)
    try:
        receivers = client.publish(channel, message)
        logger.info("published %s generation %d to %d receivers", version_id, generation, receivers)
        return True
    except redis.RedisError as exc:
        logger.warning("could not publish the pointer change (%s); API processes will pick it "
                       "up by reconcile", exc)
        return False
    finally:
        client.close()

"""The version registry and the durable serving pointer.

Used by the API and by the worker (no web imports). Promotion is a compare-and-swap on the
pointer row: the worker calls ``activate(session, candidate, expected_current=parent)`` so that a
candidate trained from an old version never overwrites a newer promotion or a manual rollback.
After a successful activation, :func:`notify` tells the other API processes (Redis pub/sub in
distributed mode); each process also re-reads the pointer periodically, so a lost message only
delays convergence.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zscl_core import list_versions as list_saved_versions

from .errors import UnknownVersion
from .tables import ModelVersion, ServingPointer, utcnow

__all__ = ["CHANNEL", "UNCONDITIONAL", "register_version", "get_version", "list_registered",
           "get_serving", "activate", "notify", "register_saved_versions"]

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
    meta = dict(metadata or {})
    created = meta.pop("created_at", None)
    row = ModelVersion(id=version_id, parent=parent, path=str(path),
                       source=meta.pop("source", None), method=meta.pop("method", None),
                       metrics=meta.pop("metrics", None) or {},
                       report={**(meta.pop("report", None) or {}), **meta})
    if isinstance(created, (int, float)):
        row.created_at = datetime.fromtimestamp(created, timezone.utc)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # another process registered it first
        session.rollback()
        return session.get(ModelVersion, version_id)
    logger.info("registered version %s (parent %s)", version_id, parent)
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
    row = session.get(ModelVersion, version_id)
    if row is None:
        raise UnknownVersion(version_id)
    return row


def list_registered(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at)))


def get_serving(session: Session) -> tuple[str | None, int]:
    """(served version id, generation); (None, 0) before the first activation."""
    row = session.execute(select(ServingPointer.version_id, ServingPointer.generation)
                          .where(ServingPointer.id == POINTER_ID)).first()
    session.rollback()  # end the read transaction: the next call must see new commits
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
    stmt = (update(ServingPointer).where(ServingPointer.id == POINTER_ID)
            .values(version_id=version_id, generation=ServingPointer.generation + 1,
                    updated_at=utcnow()))
    if conditional:
        stmt = stmt.where(ServingPointer.version_id == expected_current)
    swapped = session.execute(stmt).rowcount == 1
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

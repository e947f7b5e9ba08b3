"""Dataset records: ingest an uploaded archive (``records.ingest``) and keep its row.

All or nothing: the files are published by ``ingest_dataset`` with one rename, and the row is
written after; if the row cannot be written, freshly published files are removed again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .errors import Conflict, NotFound
from .ingest import delete_dataset, ingest_dataset
from .settings import Settings
from .tables import TERMINAL_STATES, Dataset, Job

__all__ = ["add_dataset", "get_dataset", "list_datasets", "set_suite", "delete", "dataset_out",
           "DatasetInfo", "dataset_info", "list_suites", "learned_in"]

logger = logging.getLogger(__name__)


def add_dataset(sessions: sessionmaker[Session], settings: Settings, upload: str | Path, *,
                name: str, suite: bool, content_type: str | None, test_fraction: float,
                seed: int, origin: dict[str, Any] | None = None) -> tuple[Dataset, bool]:
    """Validate, store and record an uploaded archive. Returns (row, created).

    ``origin`` records where a dataset the service built itself came from (e.g. feedback)."""
    limits = dataclasses.replace(settings.ingest_limits(), test_fraction=test_fraction,
                                 split_seed=seed)
    ingested = ingest_dataset(Path(upload), settings.datasets_dir, limits, filename=name,
                              content_type=content_type)
    with sessions() as session:
        existing = session.get(Dataset, ingested.dataset_id)
        if existing is not None:
            return existing, False
        row = Dataset(id=ingested.dataset_id, name=name, sha256=ingested.sha256,
                      path=str(ingested.path), classnames=list(ingested.classnames),
                      n_train=ingested.n_train, n_test=ingested.n_test, split=ingested.split,
                      is_suite=suite, origin=origin)
        session.add(row)
        try:
            session.commit()
        except Exception:
            session.rollback()
            if not ingested.deduplicated:
                delete_dataset(settings.datasets_dir, ingested.dataset_id)
            raise
        logger.info("dataset %s (%s): %d classes, %d train / %d test", row.id, name,
                    len(row.classnames), row.n_train, row.n_test)
        return row, True


def get_dataset(session: Session, dataset_id: str) -> Dataset:
    """The dataset row ``dataset_id``; NotFound if there is none."""
    row = session.get(Dataset, dataset_id)
    if row is None:
        raise NotFound.of("dataset", dataset_id)
    return row


def list_datasets(session: Session) -> list[Dataset]:
    """Every dataset, oldest first."""
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at)))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A dataset as an update job reads it: a plain value, usable once its session is closed."""

    id: str
    name: str
    path: str
    classnames: tuple[str, ...]
    is_suite: bool
    #: where it came from when not an upload, e.g. {"kind": "feedback", "label_set": ...}
    origin: dict[str, Any] | None

    @classmethod
    def of(cls, row: Dataset) -> DatasetInfo:
        """The plain value of a dataset row."""
        return cls(row.id, row.name, row.path, tuple(row.classnames), row.is_suite,
                   dict(row.origin) if row.origin is not None else None)


def dataset_info(session: Session, dataset_id: str) -> DatasetInfo:
    """The dataset ``dataset_id``; NotFound if there is none."""
    return DatasetInfo.of(get_dataset(session, dataset_id))


def list_suites(session: Session) -> list[DatasetInfo]:
    """Every zero-shot suite, oldest first."""
    rows = session.scalars(select(Dataset).where(Dataset.is_suite.is_(True))
                           .order_by(Dataset.created_at))
    return [DatasetInfo.of(row) for row in rows]


def learned_in(session: Session, version_ids: Sequence[str]) -> list[DatasetInfo]:
    """The datasets that jobs trained the versions ``version_ids`` on (a job's candidate is one of
    them), oldest job first, each once."""
    ids = session.scalars(select(Job.dataset_id).where(Job.candidate_version.in_(list(version_ids)))
                          .order_by(Job.created_at))
    rows = (session.get(Dataset, i) for i in dict.fromkeys(ids))
    return [DatasetInfo.of(row) for row in rows if row is not None]


def set_suite(session: Session, dataset_id: str, suite: bool) -> Dataset:
    """Mark a dataset as a zero-shot suite or not; Conflict if it was trained on or is being evaluated."""
    row = get_dataset(session, dataset_id)
    if suite and session.scalar(select(Job.id).where(Job.dataset_id == dataset_id).limit(1)):
        raise Conflict(f"dataset '{dataset_id}' was used for training; a zero-shot suite must "
                       f"never be trained on: upload another dataset as the suite")
    if row.is_suite and not suite:
        _refuse_while_evaluated(session, row, "unregistered as a suite")
    row.is_suite = suite
    session.commit()
    return row


def delete(session: Session, settings: Settings, dataset_id: str) -> None:
    """Delete a dataset no job trained on and, for a suite, none may be evaluating now.

    The row goes first, in a transaction that checks the jobs after the delete is written (the
    write lock then keeps new jobs out until it commits, on SQLite), and the files after the
    commit: a job reads the suites when it starts, so one started later never sees this one.
    """
    row = get_dataset(session, dataset_id)
    used = session.scalar(select(Job.id).where(Job.dataset_id == dataset_id).limit(1))
    if used:
        raise Conflict(f"dataset '{dataset_id}' is used by job '{used}'; it is kept as that "
                       f"job's record")
    was_suite = row.is_suite
    session.delete(row)
    session.flush()
    try:
        if was_suite:
            _refuse_while_evaluated(session, row, "deleted")
    except Conflict:
        session.rollback()
        raise
    session.commit()
    delete_dataset(settings.datasets_dir, dataset_id)


def _refuse_while_evaluated(session: Session, row: Dataset, change: str) -> None:
    """Conflict if a job that is not over may evaluate the suite ``row``: every gate scores every
    suite, from a list each job reads when it starts, on the files as they are when it gets there
    (so taking a suite away under a running job fails that job)."""
    active = session.execute(select(Job.id, Job.state).where(Job.state.not_in(TERMINAL_STATES))
                             .order_by(Job.created_at).limit(1)).first()
    if active:
        job_id, state = active
        raise Conflict(f"suite '{row.id}' ({row.name}) cannot be {change} while job '{job_id}' "
                       f"({state}) may evaluate it: every gate scores every suite; retry once it "
                       f"has ended, or cancel it")


def dataset_out(row: Dataset) -> dict[str, Any]:
    # a suite is never trained on, so every gate evaluates all of its images
    # (records.ingest.evaluation_images); any other dataset only its test split
    """A dataset row as the API shows it (a JSON-ready dict)."""
    n_eval = row.n_train + row.n_test if row.is_suite else row.n_test
    return {"id": row.id, "name": row.name, "sha256": row.sha256, "classnames": row.classnames,
            "n_train": row.n_train, "n_test": row.n_test, "n_eval": n_eval, "split": row.split,
            "is_suite": row.is_suite, "created_at": row.created_at, "origin": row.origin}

"""A dataset from feedback: the answered predictions of a label set, as an ordinary dataset.

The items are written as an archive with a ``manifest.csv`` (path, label) and ingested through
:func:`records.datasets.add_dataset`, the upload path itself: the same checks, the same
content-addressed store, the same seeded train/test split. The feedback it used is then marked
with the dataset's id, so that an auto-update policy counts only what came after.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from zscl_core.data import class_name_from_folder

from .datasets import add_dataset
from .errors import InvalidRequest
from .feedback import ImageStore
from .ingest import upload_spool
from .label_sets import get_label_set
from .settings import Settings
from .tables import Dataset, Feedback, Prediction

__all__ = ["FeedbackDataset", "build_feedback_dataset", "dataset_name"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedbackDataset:
    """What building a dataset from a label set's feedback gave: the dataset and its counts."""

    dataset: Dataset
    created: bool
    items: int                 # images in it
    per_class: dict[str, int]  # images per class
    skipped_labels: list[str]  # labels that cannot name a dataset class (e.g. with '/')


def dataset_name(label_set: str) -> str:
    """The name datasets built from a label set's feedback get."""
    return f"{label_set}.feedback"


def _usable(label: str) -> bool:
    """Whether ``label`` survives the trip through a class folder name unchanged."""
    folder = label.replace(" ", "_")
    return ("/" not in label and "\\" not in label and not label.startswith(".")
            and "_" not in label and class_name_from_folder(folder) == label)


def _items(session: Session, store: ImageStore, label_set: str
           ) -> tuple[dict[str, tuple[str, str, int]], list[str]]:
    """{image sha: (label, format, feedback id)}, the latest answer per image content, of the
    label set's current classes; and the labels that cannot name a class."""
    classnames = set(get_label_set(session, label_set).classnames)
    rows = session.execute(
        select(Feedback.id, Feedback.label, Prediction.image_sha256, Prediction.image_format)
        .join(Prediction, Feedback.prediction_id == Prediction.id)
        .where(Prediction.label_set == label_set).order_by(Feedback.created_at, Feedback.id))
    items: dict[str, tuple[str, str, int]] = {}
    skipped: set[str] = set()
    for feedback_id, label, sha, fmt in rows:
        if label not in classnames:
            continue  # the label set changed since
        if not _usable(label):
            skipped.add(label)
            continue
        if not store.path(sha).is_file():
            logger.warning("feedback image %s is missing; left out of the dataset", sha)
            continue
        items[sha] = (label, fmt, feedback_id)
    return items, sorted(skipped)


def _write_archive(fh, store: ImageStore, items: dict[str, tuple[str, str, int]]) -> None:
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["path", "label"])
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as archive:
        for sha, (label, fmt, _) in sorted(items.items()):
            path = f"images/{sha}.{fmt}"
            archive.writestr(path, store.read(sha))
            writer.writerow([path, label])
        archive.writestr("manifest.csv", manifest.getvalue())
    fh.flush()


def build_feedback_dataset(sessions: sessionmaker[Session], settings: Settings,
                           store: ImageStore, label_set: str, *, min_per_class: int = 1,
                           test_fraction: float = 0.2, seed: int = 0,
                           origin: dict[str, Any] | None = None) -> FeedbackDataset:
    """Build (or find, if the same items made one before) the dataset of a label set's feedback.

    Args:
        label_set: whose feedback to use; its current classes decide which labels count.
        min_per_class: classes with fewer answered images are left out.
        test_fraction, seed: the seeded stratified split, as for an upload.
        origin: extra facts for the dataset's ``origin`` record (e.g. what triggered it).

    Raises:
        InvalidRequest: fewer than two classes have ``min_per_class`` images.
        DatasetError: the ingestion refused the items (e.g. too few per class to split).
    """
    with sessions() as session:
        items, skipped = _items(session, store, label_set)
    per_class: dict[str, int] = {}
    for label, _, _ in items.values():
        per_class[label] = per_class.get(label, 0) + 1
    kept = {label for label, n in per_class.items() if n >= min_per_class}
    if len(kept) < 2:
        raise InvalidRequest(
            f"label set '{label_set}' has {len(kept)} class(es) with at least {min_per_class} "
            f"answered image(s) ({per_class or 'no feedback yet'}); a dataset needs two: answer "
            f"more of its predictions, or lower min_per_class")
    items = {sha: item for sha, item in items.items() if item[0] in kept}
    per_class = {label: n for label, n in sorted(per_class.items()) if label in kept}
    record = {"kind": "feedback", "label_set": label_set, "items": len(items),
              "per_class": per_class, "skipped_labels": skipped, **(origin or {})}
    with upload_spool(settings.datasets_dir) as (spool, fh):
        _write_archive(fh, store, items)
        row, created = add_dataset(sessions, settings, spool, name=dataset_name(label_set),
                                   suite=False, content_type="application/zip",
                                   test_fraction=test_fraction, seed=seed, origin=record)
    ids = [feedback_id for _, _, feedback_id in items.values()]
    with sessions() as session:
        for start in range(0, len(ids), 500):
            session.execute(update(Feedback).where(Feedback.id.in_(ids[start:start + 500]),
                                                   Feedback.dataset_id.is_(None))
                            .values(dataset_id=row.id))
        session.commit()
    logger.info("dataset %s from the feedback of label set %s: %d images, %d classes%s", row.id,
                label_set, len(items), len(per_class), "" if created else " (built before)")
    return FeedbackDataset(row, created, len(items), per_class, skipped)

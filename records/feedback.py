"""Feedback records: predictions kept with their images, users' answers to them, live accuracy.

A classify request that keeps its images gets one :class:`~records.tables.Prediction` per image;
the image bytes are stored once per content (``<feedback_dir>/images/<sha[:2]>/<sha>``). A user's
answer (:func:`record_feedback`) is the true label: a confirmation when it is the prediction's top
label, a correction otherwise. The accuracy of each served version on the answered predictions
is its *live accuracy* (:func:`summarise`).

Lifetimes: a prediction nobody answered expires after the retention time and is purged with its
image (:func:`purge_expired`); an answered one is kept until its feedback is deleted
(:func:`delete_feedback`), since it is training data. Images are written after their rows are
committed and removed after the rows are gone, and only when no other row refers to the same
content, so a concurrent keep of the same image never loses its file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from .errors import InvalidRequest, NotFound
from .label_sets import get_label_set
from .tables import Feedback, LabelSet, Prediction, utcnow

__all__ = ["ImageStore", "KeptImage", "AutoUpdatePolicy", "keep_predictions", "get_prediction",
           "record_feedback", "list_feedback", "delete_feedback", "summarise", "purge_expired",
           "new_feedback_counts", "auto_update_due", "feedback_out", "live_accuracy"]

logger = logging.getLogger(__name__)


class ImageStore:
    """Content-addressed image files under ``root``: ``images/<sha[:2]>/<sha>``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the image with this SHA-256 is (or would be) stored."""
        return self.root / "images" / sha256[:2] / sha256

    def write(self, sha256: str, data: bytes) -> None:
        """Write (or rewrite) the file atomically: a temp file in the same folder, then rename."""
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, sha256: str) -> bytes:
        """The bytes of the stored image with this SHA-256."""
        return self.path(sha256).read_bytes()

    def remove(self, sha256: str) -> None:
        """Delete the stored image with this SHA-256, if it is there."""
        self.path(sha256).unlink(missing_ok=True)


@dataclass(frozen=True)
class KeptImage:
    """One classified image to keep: its name and bytes, and the top label it was given."""

    name: str
    data: bytes
    top_label: str
    top_probability: float


@dataclass(frozen=True)
class AutoUpdatePolicy:
    """When a label set's feedback starts an update by itself, and the job it starts.

    An update starts once at least ``min_classes`` of the label set's classes each have
    ``min_per_class`` new feedback items (items no feedback dataset has used yet).
    """

    min_per_class: int = 20
    min_classes: int = 2
    method: str = "zscl"
    hparams: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.min_per_class <= 100_000:
            raise InvalidRequest(f"auto_update.min_per_class must be between 1 and 100000, got "
                                 f"{self.min_per_class}")
        if not 2 <= self.min_classes <= 100_000:
            raise InvalidRequest(f"auto_update.min_classes must be at least 2 (a dataset needs "
                                 f"two classes), got {self.min_classes}")
        if not 0 < self.test_fraction < 1:
            raise InvalidRequest(f"auto_update.test_fraction must be between 0 and 1, got "
                                 f"{self.test_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-ready dict (as stored on its label set)."""
        return asdict(self)


def _image_format(data: bytes) -> str:
    """The file suffix of the image's real format (the bytes were decoded by classify already)."""
    with Image.open(io.BytesIO(data)) as image:
        return (image.format or "bin").lower()


def keep_predictions(session: Session, store: ImageStore, images: Sequence[KeptImage], *,
                     version_id: str, label_set: str | None, labels: Sequence[str] | None,
                     retention: timedelta, max_bytes: int) -> list[str | None]:
    """Keep classified images for feedback; returns each one's prediction id, or None for an
    image not kept because the store would grow past ``max_bytes``.

    Args:
        images: the request's images, with the top label each got.
        version_id: the version that answered.
        label_set: the label set asked for, or None when ``labels`` were given.
        labels: the candidate labels when there was no label set (what feedback may name).
        retention: how long an unanswered prediction is kept.
        max_bytes: the cap on the bytes all kept predictions refer to.
    """
    used = session.scalar(select(func.coalesce(func.sum(Prediction.image_bytes), 0)))
    now = utcnow()
    rows, ids, writes = [], [], {}
    for image in images:
        if used + len(image.data) > max_bytes:
            ids.append(None)
            continue
        used += len(image.data)
        sha = hashlib.sha256(image.data).hexdigest()
        row = Prediction(id=uuid.uuid4().hex, created_at=now, expires_at=now + retention,
                         version_id=version_id, label_set=label_set,
                         labels=None if label_set is not None else list(labels or []),
                         image_name=image.name[:256], image_sha256=sha,
                         image_format=_image_format(image.data), image_bytes=len(image.data),
                         top_label=image.top_label, top_probability=float(image.top_probability))
        rows.append(row)
        ids.append(row.id)
        writes[sha] = image.data
    if not rows:
        if images:
            logger.warning("feedback store full (%d bytes, ZSCL_FEEDBACK_MAX_BYTES): %d image(s) "
                           "not kept", max_bytes, len(images))
        return ids
    session.add_all(rows)
    session.commit()
    try:  # after the commit: a concurrent delete that saw no row cannot remove these files
        for sha, data in writes.items():
            store.write(sha, data)
    except OSError:
        for row in rows:
            session.delete(row)
        session.commit()
        raise
    return ids


def get_prediction(session: Session, prediction_id: str) -> Prediction:
    """The kept prediction ``prediction_id``; NotFound if there is none (or it expired)."""
    row = session.get(Prediction, prediction_id)
    if row is None:
        raise NotFound(f"prediction '{prediction_id}' does not exist (or has expired): only "
                       f"classify requests that kept their images give prediction ids")
    return row


def _allowed_labels(session: Session, prediction: Prediction) -> list[str]:
    if prediction.label_set is None:
        return list(prediction.labels or [])
    try:
        return list(get_label_set(session, prediction.label_set).classnames)
    except NotFound:
        raise InvalidRequest(f"prediction '{prediction.id}' was made with label set "
                             f"'{prediction.label_set}', which no longer exists") from None


def record_feedback(session: Session, prediction_id: str, label: str) -> tuple[Feedback, bool]:
    """Record the true label of a prediction (a second answer replaces the first); returns
    (feedback, created).

    Raises:
        NotFound: no such prediction.
        InvalidRequest: the label is not one of the prediction's label set or labels.
    """
    prediction = get_prediction(session, prediction_id)
    label = label.strip()
    allowed = _allowed_labels(session, prediction)
    if label not in allowed:
        source = (f"label set '{prediction.label_set}'" if prediction.label_set
                  else "the request's labels")
        shown = ", ".join(repr(a) for a in allowed[:10]) + (", ..." if len(allowed) > 10 else "")
        raise InvalidRequest(f"'{label}' is not a label of {source} ({shown}); feedback names one "
                             f"of the labels the prediction chose from")
    row = session.scalar(select(Feedback).where(Feedback.prediction_id == prediction_id))
    created = row is None
    if created:
        row = Feedback(prediction_id=prediction_id)
        session.add(row)
    elif row.label != label:
        row.dataset_id = None  # a changed answer is new again
    row.label, row.correct, row.created_at = label, label == prediction.top_label, utcnow()
    session.commit()
    return row, created


def list_feedback(session: Session, *, label_set: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[tuple[Feedback, Prediction]]:
    """Feedback items with their predictions, newest first (one label set's when given)."""
    query = (select(Feedback, Prediction).join(Prediction, Feedback.prediction_id == Prediction.id)
             .order_by(Feedback.id.desc()).limit(limit).offset(offset))
    if label_set is not None:
        query = query.where(Prediction.label_set == label_set)
    return [(f, p) for f, p in session.execute(query)]


def _remove_unreferenced(session: Session, store: ImageStore, shas: set[str]) -> None:
    referenced = set(session.scalars(select(Prediction.image_sha256)
                                     .where(Prediction.image_sha256.in_(shas))))
    for sha in shas - referenced:
        store.remove(sha)


def delete_feedback(session: Session, store: ImageStore, prediction_id: str) -> None:
    """Delete a prediction, its feedback and (when nothing else refers to it) its image.

    A dataset already built from it keeps its own copy: delete that dataset to forget it there.
    """
    prediction = get_prediction(session, prediction_id)
    sha = prediction.image_sha256
    feedback = session.scalar(select(Feedback).where(Feedback.prediction_id == prediction_id))
    if feedback is not None:
        session.delete(feedback)
        session.flush()
    session.delete(prediction)
    session.commit()
    _remove_unreferenced(session, store, {sha})


def purge_expired(session: Session, store: ImageStore, now: datetime | None = None,
                  batch: int = 500) -> int:
    """Delete expired predictions nobody answered, and their images; returns how many."""
    now = now or utcnow()
    answered = select(Feedback.prediction_id)
    rows = list(session.scalars(select(Prediction).where(Prediction.expires_at < now,
                                                         Prediction.id.not_in(answered))
                                .limit(batch)))
    if not rows:
        return 0
    shas = {row.image_sha256 for row in rows}
    for row in rows:
        session.delete(row)
    session.commit()
    _remove_unreferenced(session, store, shas)
    return len(rows)


def summarise(session: Session, label_set: str | None = None) -> dict[str, Any]:
    """Counts per label and live accuracy per version, over the feedback (of one label set).

    Returns ``{"items", "confirmed", "corrected", "new", "per_label": {label: {"confirmed",
    "corrected", "new"}}, "versions": {version: {"items", "correct", "accuracy"}}}``, where
    ``new`` counts items no feedback dataset has used yet. SQL aggregates: the cost does not
    grow with the answers in Python.
    """
    is_new = case((Feedback.dataset_id.is_(None), 1), else_=0)
    query = (select(Feedback.label, Feedback.correct, func.count(), func.sum(is_new))
             .join(Prediction, Feedback.prediction_id == Prediction.id)
             .group_by(Feedback.label, Feedback.correct))
    if label_set is not None:
        query = query.where(Prediction.label_set == label_set)
    per_label: dict[str, dict[str, int]] = {}
    for label, correct, n, new in session.execute(query):
        counts = per_label.setdefault(label, {"confirmed": 0, "corrected": 0, "new": 0})
        counts["confirmed" if correct else "corrected"] += n
        counts["new"] += int(new or 0)
    total = {k: sum(c[k] for c in per_label.values()) for k in ("confirmed", "corrected", "new")}
    return {"items": total["confirmed"] + total["corrected"], **total,
            "per_label": dict(sorted(per_label.items())),
            "versions": live_accuracy(session, label_set=label_set)}


def live_accuracy(session: Session, version_ids: Sequence[str] | None = None, *,
                  label_set: str | None = None) -> dict[str, dict[str, Any]]:
    """``{version: {"items", "correct", "accuracy"}}`` over every answer on record (one SQL
    aggregate), for the given versions (default all), of one label set (default all)."""
    query = (select(Prediction.version_id, func.count(), func.sum(case((Feedback.correct, 1),
                                                                        else_=0)))
             .join(Feedback, Feedback.prediction_id == Prediction.id)
             .group_by(Prediction.version_id))
    if version_ids is not None:
        query = query.where(Prediction.version_id.in_(list(version_ids)))
    if label_set is not None:
        query = query.where(Prediction.label_set == label_set)
    return {version: {"items": n, "correct": int(correct or 0),
                      "accuracy": int(correct or 0) / n}
            for version, n, correct in session.execute(query)}


def new_feedback_counts(session: Session, label_set: str) -> dict[str, int]:
    """New (unused) feedback items per label of a label set."""
    query = (select(Feedback.label, func.count())
             .join(Prediction, Feedback.prediction_id == Prediction.id)
             .where(Prediction.label_set == label_set, Feedback.dataset_id.is_(None))
             .group_by(Feedback.label))
    return {label: n for label, n in session.execute(query)}


def auto_update_due(session: Session, label_set: str) -> AutoUpdatePolicy | None:
    """The label set's auto-update policy if its new feedback now calls for an update, else None."""
    row = session.get(LabelSet, label_set)
    if row is None or not row.auto_update:
        return None
    policy = AutoUpdatePolicy(**row.auto_update)
    counts = new_feedback_counts(session, label_set)
    ready = [label for label, n in counts.items()
             if n >= policy.min_per_class and label in row.classnames]
    return policy if len(ready) >= policy.min_classes else None


def feedback_out(feedback: Feedback, prediction: Prediction) -> dict[str, Any]:
    """A feedback answer and its prediction as the API shows them (a JSON-ready dict)."""
    return {"prediction_id": prediction.id, "label": feedback.label, "correct": feedback.correct,
            "predicted": prediction.top_label, "probability": prediction.top_probability,
            "model_version": prediction.version_id, "label_set": prediction.label_set,
            "image": prediction.image_name, "created_at": feedback.created_at,
            "dataset_id": feedback.dataset_id}

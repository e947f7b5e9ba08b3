"""The feedback loop: keep classified images, take users' answers, and turn them into updates.

Classify keeps a request's images when it asks (``keep``) or when its label set keeps them by
default; each kept image gets a prediction id. ``POST /v1/feedback`` records the true label of
one. A label set with an auto-update policy gets a dataset of its feedback and a ZSCL job by
itself once enough new answers have arrived: the job is an ordinary one (same queue, same gate),
and its ``trigger`` says what started it.

Blocking throughout (database and files): the routes call it in worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from records import feedback
from records.feedback import AutoUpdatePolicy, ImageStore, KeptImage
from records.feedback_dataset import FeedbackDataset, build_feedback_dataset, dataset_name
from records.jobs import job_summary
from records.settings import Settings
from records.tables import TERMINAL_STATES, Dataset, Job
from zscl_core import ZSCLError

from .job_schemas import JobIn
from .metrics import Metrics
from .updates import job_settings, submit_job

__all__ = ["FeedbackService", "checked_policy"]

logger = logging.getLogger(__name__)


def checked_policy(values: dict[str, Any]) -> dict[str, Any]:
    """An auto-update policy as stored, once its job settings pass the checks a job's do
    (``InvalidRequest`` or ``ConfigError`` naming the field otherwise)."""
    policy = AutoUpdatePolicy(**values)
    job_settings(policy.method, policy.hparams, policy.gate)
    return policy.to_dict()


class FeedbackService:
    """Predictions kept for feedback, answers, datasets from them and automatic updates."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, celery: Celery,
                 metrics: Metrics):
        self.sessions = sessions
        self.settings = settings
        self.celery = celery
        self.metrics = metrics
        self.store = ImageStore(settings.feedback_dir)
        self._auto_lock = threading.Lock()  # one auto-update build at a time in this process

    def keep(self, images: Sequence[KeptImage], *, version_id: str, label_set: str | None,
             labels: Sequence[str] | None) -> list[str | None]:
        """Store the images with their predictions; their prediction ids (None: store full)."""
        with self.sessions() as session:
            return feedback.keep_predictions(
                session, self.store, images, version_id=version_id, label_set=label_set,
                labels=labels, retention=timedelta(days=self.settings.feedback_retention_days),
                max_bytes=self.settings.feedback_max_bytes)

    def send(self, prediction_id: str, label: str) -> tuple[dict[str, Any], bool, dict | None]:
        """Record an answer; returns (the feedback item, created, the job an auto-update
        policy started or None)."""
        with self.sessions() as session:
            row, created = feedback.record_feedback(session, prediction_id, label)
            prediction = feedback.get_prediction(session, prediction_id)
            item = feedback.feedback_out(row, prediction)
            live = feedback.live_accuracy(session, [prediction.version_id])
        self.metrics.feedback.labels(prediction.version_id,
                                     "confirmed" if row.correct else "corrected").inc()
        self.metrics.set_live_accuracy(live)
        job = self.maybe_auto_update(prediction.label_set) if prediction.label_set else None
        return item, created, job

    def make_dataset(self, label_set: str, *, min_per_class: int, test_fraction: float,
                     seed: int, origin: dict[str, Any] | None = None) -> FeedbackDataset:
        """Build a dataset from a label set's answered images (the from-feedback route and auto-updates)."""
        return build_feedback_dataset(self.sessions, self.settings, self.store, label_set,
                                      min_per_class=min_per_class, test_fraction=test_fraction,
                                      seed=seed, origin=origin)

    def maybe_auto_update(self, label_set: str) -> dict[str, Any] | None:
        """Start the label set's auto-update if its policy calls for one and none is running;
        returns the job's summary, or None. A failure is logged, never raised: the answer that
        triggered it is recorded either way."""
        # never wait: while one answer builds a dataset (seconds for thousands of images), the
        # others are recorded and answered at once; the next answer after it checks again
        if not self._auto_lock.acquire(blocking=False):
            return None
        try:
            with self.sessions() as session:
                policy = feedback.auto_update_due(session, label_set)
                if policy is None or self._running(session, label_set):
                    return None
                counts = feedback.new_feedback_counts(session, label_set)
            return self._start(label_set, policy, counts)
        except ZSCLError as exc:
            logger.warning("auto-update of label set %s not started: %s", label_set, exc)
            return None
        finally:
            self._auto_lock.release()

    def _start(self, label_set: str, policy: AutoUpdatePolicy, counts: dict[str, int]
               ) -> dict[str, Any]:
        trigger = {"kind": "auto-update", "label_set": label_set, "new_per_class": counts,
                   "policy": policy.to_dict()}
        built = self.make_dataset(label_set, min_per_class=policy.min_per_class,
                                  test_fraction=policy.test_fraction, seed=0,
                                  origin={"trigger": "auto-update"})
        body = JobIn(dataset_id=built.dataset.id, method=policy.method, hparams=policy.hparams,
                     gate=policy.gate)
        job, created = submit_job(self.sessions, self.settings, self.celery, body,
                                  idempotency_key=f"auto-update:{built.dataset.id}",
                                  trigger={**trigger, "dataset_id": built.dataset.id,
                                           "items": built.items})
        if created:
            logger.info("label set %s: %d new answers started auto-update job %s", label_set,
                        sum(counts.values()), job.id)
        return job_summary(job)

    @staticmethod
    def _running(session: Session, label_set: str) -> bool:
        """Whether a job on one of the label set's feedback datasets has not ended yet."""
        return session.scalar(
            select(Job.id).join(Dataset, Job.dataset_id == Dataset.id)
            .where(Dataset.name == dataset_name(label_set), Job.state.not_in(TERMINAL_STATES))
            .limit(1)) is not None

    def refresh_metrics(self) -> None:
        """Set every version's live accuracy in the metrics from the records."""
        with self.sessions() as session:
            self.metrics.set_live_accuracy(feedback.live_accuracy(session))

    def purge(self) -> int:
        """Delete expired predictions nobody answered; returns how many."""
        total = 0
        while True:
            with self.sessions() as session:
                removed = feedback.purge_expired(session, self.store)
            total += removed
            if not removed:
                return total

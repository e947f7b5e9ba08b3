"""The database tables: the model registry, label sets, and the durable records of continual
updates (datasets, jobs, job events).

The Celery result backend is never the source of truth: the API answers from these rows, and the
worker writes them as the job moves through its states.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "ModelVersion", "LabelSet", "ServingPointer", "Dataset", "Job", "JobEvent",
           "Prediction", "Feedback", "JobState", "JOB_STATES", "TERMINAL_STATES", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (what every timestamp column stores)."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """The declarative base of every table (dicts and lists of strings map to JSON)."""

    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class ModelVersion(Base):
    """A saved version directory known to the registry (weights live on disk, not here)."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    path: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    method: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LabelSet(Base):
    """Named class names + prompt templates, used by name in classify requests."""

    __tablename__ = "label_sets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    classnames: Mapped[list[str]] = mapped_column(JSON)
    templates: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)
    #: classify requests with this label set keep their images for feedback unless they say not to
    keep_images: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: the automatic-update policy (``records.feedback.AutoUpdatePolicy`` as a dict), or None
    auto_update: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ServingPointer(Base):
    """The one row saying which version is served; ``generation`` grows on every activation."""

    __tablename__ = "serving_pointer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version_id: Mapped[str] = mapped_column(String(128), ForeignKey("model_versions.id"))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobState(StrEnum):
    """The states of a job (``records.jobs.ALLOWED`` says which moves are legal). Members equal
    their strings, so ``jobs.state`` stores and the API shows the plain values."""

    QUEUED = "queued"
    RUNNING = "running"
    EVALUATING = "evaluating"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


JOB_STATES = tuple(JobState)
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.REJECTED, JobState.FAILED,
                             JobState.CANCELLED})


class Dataset(Base):
    """An uploaded labelled dataset, stored content-addressed under the datasets directory."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    classnames: Mapped[list[str]] = mapped_column(JSON)
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    is_suite: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: where it came from when not an upload, e.g. {"kind": "feedback", "label_set": ...}
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Job(Base):
    """One update: train on a dataset, evaluate, gate, maybe promote."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    dataset_id: Mapped[str] = mapped_column(String(64), ForeignKey("datasets.id"))
    method: Mapped[str] = mapped_column(String(32))
    hparams: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    losses: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    base_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    candidate_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: what created it when not a user's POST, e.g. {"kind": "auto-update", "label_set": ...}
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class JobEvent(Base):
    """An append-only log line of a job: state changes, progress, the report."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Prediction(Base):
    """A classified image kept for feedback: its bytes are stored content-addressed on disk
    (``image_sha256``), and it expires unless someone gives feedback on it."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    version_id: Mapped[str] = mapped_column(String(128))
    label_set: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    labels: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # when no label set
    image_name: Mapped[str] = mapped_column(String(256))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_format: Mapped[str] = mapped_column(String(8))  # the file suffix: "png", "jpeg"...
    image_bytes: Mapped[int] = mapped_column(Integer)
    top_label: Mapped[str] = mapped_column(String(256))
    top_probability: Mapped[float] = mapped_column(Float)


class Feedback(Base):
    """A user's answer to one prediction: the true label (a confirmation when it is the
    prediction's top label, a correction otherwise)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(32), ForeignKey("predictions.id"),
                                               unique=True)
    label: Mapped[str] = mapped_column(String(256))
    correct: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: the first dataset built from it; None while it is new (what the auto-update policy counts)
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

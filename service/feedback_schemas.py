"""Request and response bodies of the feedback routes (``/v1/feedback``, datasets from it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from .job_schemas import DatasetOut, JobOut

__all__ = ["FeedbackIn", "FeedbackOut", "FeedbackSent", "FeedbackList", "FromFeedbackIn",
           "FromFeedbackOut"]


class FeedbackIn(BaseModel):
    """An answer to a kept prediction: its id and the true label."""

    prediction_id: str = Field(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$",
                               description="from a classify response that kept its images")
    label: str = Field(min_length=1, max_length=256, description="the true label: one of the "
                       "prediction's label set or labels")


class FeedbackOut(BaseModel):
    """One answer on record, beside what the model predicted."""

    prediction_id: str
    label: str = Field(description="the true label, as the user said")
    correct: bool = Field(description="whether the prediction's top label was the true one")
    predicted: str = Field(description="the prediction's top label")
    probability: float
    model_version: str = Field(description="the version that made the prediction")
    label_set: str | None
    image: str
    created_at: datetime
    dataset_id: str | None = Field(description="the first dataset built from it (null: new)")


class FeedbackSent(FeedbackOut):
    """The answer just recorded, and the update job it started, if any."""

    auto_update_job: JobOut | None = Field(None, description="the job this answer started, when "
                                           "it completed the label set's auto-update policy")


class FeedbackList(BaseModel):
    """A page of answers, newest first, with counts and live accuracy."""

    summary: dict[str, Any] = Field(description="items, confirmed, corrected, new; per_label "
                                    "counts; versions: live accuracy {items, correct, accuracy} "
                                    "of every version that made an answered prediction")
    items: list[FeedbackOut]


class FromFeedbackIn(BaseModel):
    """Which label set's answers to turn into a dataset, and how to split it."""

    label_set: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    min_per_class: int = Field(1, ge=1, le=100_000, description="classes with fewer answered "
                               "images are left out")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)


class FromFeedbackOut(DatasetOut):
    """The dataset built from feedback, with the answers in it and the labels left out."""

    items: int = Field(description="answered images in the dataset")
    per_class: dict[str, int]
    skipped_labels: list[str] = Field(description="labels that cannot name a dataset class "
                                      "(with '/', '_' or a leading '.'); rename them in the "
                                      "label set to use their feedback")
    created: bool

"""Request and response bodies of the dataset and job endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DatasetOut", "SuiteIn", "JobIn", "JobOut", "JobEventOut", "JobEventsOut"]


class DatasetOut(BaseModel):
    id: str
    name: str
    sha256: str
    classnames: list[str]
    n_train: int = Field(description="images in the stored train split (0 for a bare test/ upload, "
                                     "which can only be a suite)")
    n_test: int
    n_eval: int = Field(description="images every gate evaluates this dataset on: n_train + n_test "
                                    "for a suite (never trained on), n_test otherwise")
    split: str = Field(description="'auto' (seeded) or 'explicit' (train/ and test/ folders, or "
                                   "test/ alone)")
    is_suite: bool = Field(description="a zero-shot evaluation suite: checked by every gate, never trained on")
    created_at: datetime


class SuiteIn(BaseModel):
    suite: bool = True


class JobIn(BaseModel):
    dataset_id: str = Field(min_length=1, max_length=64)
    method: str = Field("zscl", description="zscl (default), continual_ft, lwf, wise_ft, "
                                            "zscl_no_avg, zscl_no_distill")
    hparams: dict[str, Any] = Field(default_factory=dict,
                                    description="zscl_core.UpdateConfig fields, e.g. steps, lr")
    gate: dict[str, Any] = Field(default_factory=dict,
                                 description="zscl_core.GatePolicy fields: min_new_task_gain, "
                                             "max_mean_drop, max_dataset_drop, max_drift")
    idempotency_key: str | None = Field(None, max_length=128,
                                        description="or the Idempotency-Key header")


class JobOut(BaseModel):
    id: str
    state: str
    dataset_id: str
    method: str
    hparams: dict[str, Any]
    gate: dict[str, Any]
    step: int
    total_steps: int
    progress: float
    losses: dict[str, Any]
    eta_s: float | None
    metrics: dict[str, Any]
    report: dict[str, Any]
    error: dict[str, Any] | None
    base_version: str | None
    candidate_version: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobEventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    data: dict[str, Any]


class JobEventsOut(BaseModel):
    events: list[JobEventOut]
    next_after: int = Field(description="pass as ?after= to get the next page")

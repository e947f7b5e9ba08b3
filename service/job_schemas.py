"""Request and response bodies of the dataset and job endpoints."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from zscl_core import GatePolicy, UpdateConfig

__all__ = ["DatasetOut", "SuiteIn", "HParamsIn", "GateIn", "JobIn", "JobOut", "JobEventOut",
           "JobEventsOut"]


class DatasetOut(BaseModel):
    """A stored dataset: its classes, split sizes, and whether gates evaluate on it."""

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
    origin: dict[str, Any] | None = Field(None, description="where a dataset the service built "
                                          "came from (e.g. a label set's feedback); null for uploads")


class SuiteIn(BaseModel):
    """Whether a dataset is a zero-shot evaluation suite."""

    suite: bool = True


def _model_of(source: type, name: str, doc: str, *, exclude: tuple[str, ...] = ()
              ) -> type[BaseModel]:
    """A strict pydantic model with the fields, types and defaults of the dataclass ``source``.

    Generated, so the API cannot drift from ``zscl_core``: a new field there is a new accepted
    key here, with its type. Strict: 6.5 or "6" is no integer, "no" is no boolean, unknown keys
    are refused. The value ranges stay the dataclass's own checks (its ``__post_init__``).
    """
    hints = typing.get_type_hints(source)
    fields = {f.name: (hints[f.name], Field(... if f.default is dataclasses.MISSING else f.default))
              for f in dataclasses.fields(source) if f.name not in exclude}
    config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    return create_model(name, __config__=config, __doc__=doc, **fields)


HParamsIn = _model_of(UpdateConfig, "HParamsIn", "zscl_core.UpdateConfig fields (the method is "
                      "the job's own field); omitted ones take UpdateConfig's defaults.",
                      exclude=("method",))
GateIn = _model_of(GatePolicy, "GateIn", "zscl_core.GatePolicy fields; omitted ones take "
                   "GatePolicy's defaults.")


def _documented_as(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a free-form dict field: the fields and types of ``model``."""
    schema = model.model_json_schema()
    return {"properties": schema["properties"], "additionalProperties": False}


class JobIn(BaseModel):
    """A job request. ``hparams`` and ``gate`` stay plain dicts here: ``job_settings`` in
    :mod:`service.updates` is the one place that checks them (with :data:`HParamsIn` and
    :data:`GateIn`), for the API and the benchmark alike; the schema documents their fields."""

    dataset_id: str = Field(min_length=1, max_length=64)
    method: str = Field("zscl", description="zscl (default), continual_ft, lwf, wise_ft, "
                                            "zscl_no_avg, zscl_no_distill")
    hparams: dict[str, Any] = Field(default_factory=dict,
                                    description="zscl_core.UpdateConfig fields, e.g. steps, lr",
                                    json_schema_extra=_documented_as(HParamsIn))
    gate: dict[str, Any] = Field(default_factory=dict,
                                 description="zscl_core.GatePolicy fields: min_new_task_gain, "
                                             "max_mean_drop, max_dataset_drop, max_drift, "
                                             "confidence",
                                 json_schema_extra=_documented_as(GateIn))
    idempotency_key: str | None = Field(None, max_length=128,
                                        description="or the Idempotency-Key header")


class JobOut(BaseModel):
    """An update job: its request, state and progress, and its gate report and versions once run."""

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
    trigger: dict[str, Any] | None = Field(None, description="what created a job no user posted "
                                           "(e.g. a label set's auto-update policy); null otherwise")


class JobEventOut(BaseModel):
    """One entry of a job's event log."""

    id: int
    at: datetime
    kind: str
    data: dict[str, Any]


class JobEventsOut(BaseModel):
    """A page of a job's events, and where the next page starts."""

    events: list[JobEventOut]
    next_after: int = Field(description="pass as ?after= to get the next page")

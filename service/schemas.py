"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from records.errors import InvalidRequest
from zscl_core import check_template

__all__ = ["AutoUpdateIn", "ImageIn", "ClassifyJSON", "LabelScore", "ImagePrediction", "ClassifyResponse",
           "LabelSetIn", "LabelSetOut", "ModelOut", "ModelsOut", "ActivateOut", "HealthOut",
           "check_templates", "check_labels", "split_labels", "MAX_LABEL_CHARS"]


MAX_LABEL_CHARS = 256  # a label fills one slot of a prompt, and CLIP reads 77 tokens of it


def check_labels(labels: list) -> list[str]:
    """The labels stripped, or ValueError naming the first that is not a non-empty, unique,
    bounded string."""
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(f"labels must be strings; label {index} is {label!r} "
                             f"({type(label).__name__})")
    cleaned = [label.strip() for label in labels]
    if not cleaned:
        raise ValueError("labels is empty; give at least one candidate label")
    for index, label in enumerate(cleaned):
        if not label:
            raise ValueError(f"labels must be non-empty strings; label {index} is empty")
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"label {index} ({label[:40]!r}...) has {len(label)} characters, more "
                             f"than the limit of {MAX_LABEL_CHARS}; shorten it")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("labels must be unique")
    return cleaned


def split_labels(values: list[str]) -> list | None:
    """The labels of a multipart request: the ``labels`` field repeated, or one value that is a
    JSON array or comma-separated; None when absent. Items are checked later (:func:`check_labels`).

    Raises:
        InvalidRequest: the value looks like JSON (starts with '[') but is not, or nests too deep
            to parse (json raises RecursionError on thousands of '[').
    """
    if not values:
        return None
    if len(values) == 1:
        value = values[0].strip()
        if value.startswith("["):
            try:
                return list(json.loads(value))
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"labels looks like JSON but is not: {exc}") from exc
            except RecursionError as exc:
                raise InvalidRequest("labels is a JSON array nested too deep to read; send a flat "
                                     "array of strings, e.g. [\"cat\", \"dog\"]") from exc
        return [part.strip() for part in value.split(",")]
    return values


def check_templates(templates: list[str] | None) -> list[str] | None:
    """The templates, each with exactly one '{}' (:func:`zscl_core.check_template`), or None;
    ValueError (a ``ConfigError``) naming the first bad one."""
    if templates is None:
        return None
    if not templates:
        raise ValueError("templates is empty: give at least one template with one '{}' where the "
                         "label goes, e.g. 'a photo of a {}.', or leave it out for the defaults")
    return [check_template(t) for t in templates]


class ImageIn(BaseModel):
    """An image in a JSON request: base64 data and an optional name."""

    data: str = Field(description="the encoded image file (PNG, JPEG, ...), base64")
    name: str | None = Field(None, description="a name to report back (default image-<index>)")


class ClassifyJSON(BaseModel):
    """A classify request as JSON: images in base64."""

    images: list[ImageIn | str] = Field(min_length=1, description="base64 images, or objects with a name")
    labels: list[str] | None = Field(None, description="candidate labels (or give label_set)")
    label_set: str | None = Field(None, description="name of a stored label set")
    templates: list[str] | None = Field(None, description="prompt templates with one '{}'")
    top_k: int = Field(5, ge=1)
    keep: bool | None = Field(None, description="keep the images for feedback: each gets a "
                              "prediction_id (default: the label set's keep_images, else no)")


class LabelScore(BaseModel):
    """One candidate label and its probability."""

    label: str
    probability: float


class ImagePrediction(BaseModel):
    """One image's ranked labels, and its prediction id when the image was kept."""

    image: str
    labels: list[LabelScore]
    prediction_id: str | None = Field(None, description="when the image was kept: send the true "
                                      "label to POST /v1/feedback with it")


class ClassifyResponse(BaseModel):
    """The answer of POST /v1/classify: each image's ranked labels, from one model version."""

    model_version: str = Field(description="the version whose image AND text encoders answered")
    results: list[ImagePrediction]
    time_ms: float


class AutoUpdateIn(BaseModel):
    """A label set's auto-update policy: start a job on its feedback once enough has arrived."""

    model_config = {"extra": "forbid"}

    min_per_class: int = Field(20, ge=1, le=100_000, description="new answers a class needs")
    min_classes: int = Field(2, ge=2, le=100_000, description="classes that need them")
    method: str = Field("zscl", description="the job's method, as in POST /v1/jobs")
    hparams: dict[str, Any] = Field(default_factory=dict, description="as in POST /v1/jobs")
    gate: dict[str, Any] = Field(default_factory=dict, description="as in POST /v1/jobs")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="of each class, held out for "
                                 "the gate")


class LabelSetIn(BaseModel):
    """A label set to store: its labels, templates and feedback settings."""

    classnames: list[str] = Field(min_length=1, description="unique labels, as classify accepts "
                                  "them (at most ZSCL_MAX_LABELS)")
    templates: list[str] | None = Field(None, description="each with one '{}' (at most "
                                        "ZSCL_MAX_TEMPLATES); default: the service's templates")
    source: str | None = Field(None, description="who made it, e.g. the task that learned it")
    keep_images: bool = Field(False, description="classify requests with this set keep their "
                              "images for feedback unless they say keep=false")
    auto_update: AutoUpdateIn | None = Field(None, description="start an update on this set's "
                                             "feedback by itself (needs keep_images or keep=true)")


class LabelSetOut(BaseModel):
    """A stored label set, as classify uses it."""

    name: str
    classnames: list[str]
    templates: list[str] | None
    source: str | None
    updated_at: datetime
    keep_images: bool = False
    auto_update: dict[str, Any] | None = None


class ModelOut(BaseModel):
    """A model version: where it came from, its metrics and gate report, and whether it is served."""

    id: str
    parent: str | None
    created_at: datetime
    source: str | None
    method: str | None
    metrics: dict[str, Any]
    report: dict[str, Any]
    serving: bool
    lineage: list[str] = Field(description="ancestors, nearest first")


class ModelsOut(BaseModel):
    """Every model version, with the served one and the one this process has loaded."""

    serving: str | None
    generation: int
    loaded: str | None = Field(description="the version this process has in memory")
    versions: list[ModelOut]


class ActivateOut(BaseModel):
    """The result of activating a version: the one now served and the one before."""

    version: str
    previous: str | None
    generation: int
    notified: bool = Field(description="whether other API processes were told over Redis")


class HealthOut(BaseModel):
    """A health probe's answer: the status and, once ready, the served version."""

    status: str
    model_version: str | None = None
    detail: str | None = None

"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

__all__ = ["ImageIn", "ClassifyJSON", "LabelScore", "ImagePrediction", "ClassifyResponse",
           "LabelSetIn", "LabelSetOut", "ModelOut", "ModelsOut", "ActivateOut", "HealthOut",
           "check_templates", "check_labels"]


def check_labels(labels: list[str]) -> list[str]:
    cleaned = [label.strip() for label in labels]
    if any(not label for label in cleaned):
        raise ValueError("labels must be non-empty strings")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("labels must be unique")
    return cleaned


def check_templates(templates: list[str] | None) -> list[str] | None:
    if templates is None:
        return None
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise ValueError("each template needs exactly one '{}' where the label goes, "
                         "e.g. 'a photo of a {}.'")
    return templates


class ImageIn(BaseModel):
    data: str = Field(description="the encoded image file (PNG, JPEG, ...), base64")
    name: str | None = Field(None, description="a name to report back (default image-<index>)")


class ClassifyJSON(BaseModel):
    """A classify request as JSON: images in base64."""

    images: list[ImageIn | str] = Field(min_length=1, description="base64 images, or objects with a name")
    labels: list[str] | None = Field(None, description="candidate labels (or give label_set)")
    label_set: str | None = Field(None, description="name of a stored label set")
    templates: list[str] | None = Field(None, description="prompt templates with one '{}'")
    top_k: int = Field(5, ge=1)


class LabelScore(BaseModel):
    label: str
    probability: float


class ImagePrediction(BaseModel):
    image: str
    labels: list[LabelScore]


class ClassifyResponse(BaseModel):
    model_version: str = Field(description="the version whose image AND text encoders answered")
    results: list[ImagePrediction]
    time_ms: float


class LabelSetIn(BaseModel):
    classnames: list[str] = Field(min_length=1)
    templates: list[str] | None = Field(None, description="default: the service's prompt templates")
    source: str | None = Field(None, description="who made it, e.g. the task that learned it")

    _labels = field_validator("classnames")(classmethod(lambda cls, v: check_labels(v)))
    _templates = field_validator("templates")(classmethod(lambda cls, v: check_templates(v)))


class LabelSetOut(BaseModel):
    name: str
    classnames: list[str]
    templates: list[str] | None
    source: str | None
    updated_at: datetime


class ModelOut(BaseModel):
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
    serving: str | None
    generation: int
    loaded: str | None = Field(description="the version this process has in memory")
    versions: list[ModelOut]


class ActivateOut(BaseModel):
    version: str
    previous: str | None
    generation: int
    notified: bool = Field(description="whether other API processes were told over Redis")


class HealthOut(BaseModel):
    status: str
    model_version: str | None = None
    detail: str | None = None

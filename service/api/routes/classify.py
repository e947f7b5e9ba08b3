"""``POST /v1/classify``: one image or a batch, as multipart files or base64 JSON."""

from __future__ import annotations

import asyncio
import base64
import binascii

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from records.errors import InvalidRequest, UnsupportedMediaType
from records.feedback import KeptImage

from ...classify import Classification
from ...schemas import (ClassifyJSON, ClassifyResponse, ImageIn, ImagePrediction, LabelScore,
                         split_labels)
from .. import API_V1
from ..deps import ServicesDep, require_inference

router = APIRouter(prefix=API_V1, tags=["classify"])

_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "one or more image files"},
        "labels": {"type": "array", "items": {"type": "string"},
                   "description": "candidate labels: repeat the field, or one comma-separated value"},
        "label_set": {"type": "string", "description": "name of a stored label set"},
        "templates": {"type": "array", "items": {"type": "string"}},
        "top_k": {"type": "integer", "default": 5, "minimum": 1},
        "keep": {"type": "boolean", "description": "keep the images for feedback (each gets a "
                 "prediction_id); default: the label set's keep_images, else false"},
    },
}


def _inline_refs(schema: dict) -> dict:
    """The JSON schema with its local ``$defs`` inlined (OpenAPI resolves '#' at the document)."""
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


OPENAPI_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
    "application/json": {"schema": _inline_refs(ClassifyJSON.model_json_schema())},
}}}


def too_many_images(max_files: int) -> InvalidRequest:
    """The one refusal of a multipart batch over the image limit, whether our count or
    starlette's parser (which stops reading at ``max_files + 1`` file parts) saw it first."""
    return InvalidRequest(f"more than {max_files} images in one request; the limit is "
                          f"{max_files} per request: split the batch")


async def read_form(request: Request, max_files: int) -> FormData:
    """The multipart form, its file parts capped (one over ``max_files``, so that the caller
    can count them and refuse with :func:`too_many_images`)."""
    try:
        return await request.form(max_files=max_files + 1, max_fields=10_000)
    except HTTPException as exc:  # starlette's own multipart limits and syntax errors
        if str(exc.detail).startswith("Too many files"):  # starlette's words for its max_files
            raise too_many_images(max_files) from exc
        raise InvalidRequest(f"could not read the multipart body: {exc.detail}") from exc


async def _from_multipart(request: Request, max_files: int) -> dict:
    form = await read_form(request, max_files)
    try:
        files = [item for key in ("images", "image", "file", "files") for item in form.getlist(key)
                 if isinstance(item, UploadFile)]
        if len(files) > max_files:
            raise too_many_images(max_files)
        images = [(f.filename or f"image-{i}", await f.read()) for i, f in enumerate(files)]
        text = lambda key: [v for v in form.getlist(key) if isinstance(v, str)]  # noqa: E731
        top_k = text("top_k")
        try:
            top_k_value = int(top_k[0]) if top_k else 5
        except ValueError as exc:
            raise InvalidRequest("top_k must be an integer") from exc
        return {"files": images, "labels": split_labels(text("labels")),
                "label_set": (text("label_set") or [None])[0], "templates": text("templates") or None,
                "top_k": top_k_value, "keep": _flag(text("keep"), "keep")}
    finally:
        await form.close()


def _flag(values: list[str], name: str) -> bool | None:
    """A multipart boolean field: true/false (or 1/0, yes/no), None when absent."""
    if not values:
        return None
    value = values[0].strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"{name} must be true or false, got {values[0][:40]!r}")


def _decode_b64(item: ImageIn | str, index: int) -> tuple[str, bytes]:
    data, name = (item, None) if isinstance(item, str) else (item.data, item.name)
    name = name or f"image-{index}"
    if data.startswith("data:"):  # a data URL: drop the "data:image/png;base64," prefix
        data = data.partition(",")[2]
    try:
        return name, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"image '{name}' is not valid base64: {exc}") from exc


async def _from_json(request: Request) -> dict:
    try:
        body = ClassifyJSON.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidRequest(f"invalid JSON body: {problems}") from exc
    return {"files": [_decode_b64(item, i) for i, item in enumerate(body.images)],
            "labels": body.labels, "label_set": body.label_set, "templates": body.templates,
            "top_k": body.top_k, "keep": body.keep}


def _response(result: Classification, prediction_ids: list[str | None]) -> ClassifyResponse:
    return ClassifyResponse(
        model_version=result.version, time_ms=round(result.seconds * 1000, 3),
        results=[ImagePrediction(image=name, labels=[LabelScore(label=label, probability=p)
                                                     for label, p in ranked],
                                 prediction_id=prediction_id)
                 for name, ranked, prediction_id in zip(result.names, result.ranked,
                                                        prediction_ids)])


async def _keep(services, files: list[tuple[str, bytes]], result: Classification,
                keep: bool | None, label_set: str | None) -> list[str | None]:
    """Prediction ids for the images when the request keeps them (``service.feedback``)."""
    if not (keep if keep is not None else result.keep_default):
        return [None] * len(files)
    kept = [KeptImage(name, data, ranked[0][0], ranked[0][1])
            for (name, data), ranked in zip(files, result.ranked)]
    return await asyncio.to_thread(services.feedback.keep, kept, version_id=result.version,
                                   label_set=label_set,
                                   labels=None if label_set is not None else result.labels)


@router.post("/classify", response_model=ClassifyResponse, openapi_extra=OPENAPI_BODY,
             dependencies=[Depends(require_inference)],
             summary="Zero-shot classify one image or a batch",
             description="Rank candidate labels (or a stored label set) for each image. "
                         "Image features and the text classifier come from the same model "
                         "version, named in `model_version` and the X-Model-Version header. "
                         "With `keep` (or a label set that keeps images), each image is kept for "
                         "feedback and gets a `prediction_id` (POST /v1/feedback).")
async def classify(request: Request, services: ServicesDep) -> ClassifyResponse:
    """Rank candidate labels for each uploaded image with the served model."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        parsed = await _from_multipart(request, services.settings.max_batch_images)
    elif content_type.startswith("application/json"):
        parsed = await _from_json(request)
    else:
        raise UnsupportedMediaType("send multipart/form-data (image files in 'images') or "
                                   "application/json (base64 images)")
    files, keep = parsed.pop("files"), parsed.pop("keep")
    result = await services.classifier.classify(files, **parsed,
                                                disconnected=request.is_disconnected)
    request.state.model_version = result.version
    services.metrics.images.labels(result.version).inc(len(result.names))
    prediction_ids = await _keep(services, files, result, keep, parsed["label_set"])
    return _response(result, prediction_ids)

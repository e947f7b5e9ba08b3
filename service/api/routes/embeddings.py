"""``POST /v1/embeddings``: images (multipart files or base64 JSON, as classify takes them) and
texts, answered as the served version's L2-normalised vectors."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from records.errors import InvalidRequest, UnsupportedMediaType

from ...embedding_schemas import EmbeddingsResponse, EmbedJSON, ImageEmbedding, TextEmbedding
from ...embeddings import ENCODINGS, Embeddings, as_base64_float16
from .. import API_V1
from ..deps import ServicesDep, require_inference
from .classify import _decode_b64, _inline_refs, read_form, too_many_images

router = APIRouter(prefix=API_V1, tags=["embeddings"])

IMAGE_FIELDS = ("images", "image", "file", "files")  # as classify reads them
TEXT_FIELDS = ("texts", "text")

_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "image files"},
        "texts": {"type": "array", "items": {"type": "string"},
                  "description": "texts: repeat the field, one text each (commas are text)"},
        "encoding": {"type": "string", "enum": list(ENCODINGS), "default": "float"},
    },
}
OPENAPI_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
    "application/json": {"schema": _inline_refs(EmbedJSON.model_json_schema())},
}}}


async def _from_multipart(request: Request, max_files: int) -> dict:
    form = await read_form(request, max_files)
    try:
        files = [item for key in IMAGE_FIELDS for item in form.getlist(key)
                 if isinstance(item, UploadFile)]
        if len(files) > max_files:
            raise too_many_images(max_files)
        images = [(f.filename or f"image-{i}", await f.read()) for i, f in enumerate(files)]
        texts = [v for key in TEXT_FIELDS for v in form.getlist(key) if isinstance(v, str)]
        encoding = [v for v in form.getlist("encoding") if isinstance(v, str)] or ["float"]
        if encoding[0] not in ENCODINGS:
            raise InvalidRequest(f"encoding must be one of {', '.join(ENCODINGS)}, not "
                                 f"{encoding[0][:40]!r}")
        return {"files": images, "texts": texts, "encoding": encoding[0]}
    finally:
        await form.close()


async def _from_json(request: Request) -> dict:
    try:
        body = EmbedJSON.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidRequest(f"invalid JSON body: {problems}") from exc
    return {"files": [_decode_b64(item, i) for i, item in enumerate(body.images)],
            "texts": body.texts, "encoding": body.encoding}


def _response(result: Embeddings, encoding: str) -> EmbeddingsResponse:
    def encoded(vectors):
        return as_base64_float16(vectors) if encoding == "base64" else vectors.tolist()

    return EmbeddingsResponse(
        model_version=result.version, dim=result.dim, encoding=encoding,
        time_ms=round(result.seconds * 1000, 3),
        images=[ImageEmbedding(name=name, embedding=vector)
                for name, vector in zip(result.names, encoded(result.images))],
        texts=[TextEmbedding(text=text, embedding=vector)
               for text, vector in zip(result.texts, encoded(result.text_features))])


@router.post("/embeddings", response_model=EmbeddingsResponse, openapi_extra=OPENAPI_BODY,
             dependencies=[Depends(require_inference)],
             summary="Embed images and texts",
             description="L2-normalised image and text embeddings from one model version, named "
                         "in `model_version` and the X-Model-Version header. An image's embedding "
                         "is the feature classify ranks with; a text's is its text-tower feature, "
                         "no template. `encoding`: 'float' (float32 lists, the default) or "
                         "'base64' (little-endian float16 bytes, base64).")
async def embeddings(request: Request, services: ServicesDep) -> EmbeddingsResponse:
    """Return the served model's embeddings of images and texts, for use outside the service."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        parsed = await _from_multipart(request, services.settings.max_batch_images)
    elif content_type.startswith("application/json"):
        parsed = await _from_json(request)
    else:
        raise UnsupportedMediaType("send multipart/form-data (image files in 'images', texts in "
                                   "'texts') or application/json (base64 images, texts)")
    result = await services.embedder.embed(parsed["files"], parsed["texts"])
    request.state.model_version = result.version
    for kind, count in (("image", len(result.names)), ("text", len(result.texts))):
        if count:
            services.metrics.embedded.labels(result.version, kind).inc(count)
    return _response(result, parsed["encoding"])

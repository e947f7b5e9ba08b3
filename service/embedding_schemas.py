"""Request and response bodies of ``POST /v1/embeddings`` (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .schemas import ImageIn

__all__ = ["EmbedJSON", "EmbeddingsResponse", "Encoding", "ImageEmbedding", "TextEmbedding"]

Encoding = Literal["float", "base64"]

_ENCODING_HELP = ("'float': a list of float32 values; 'base64': the vector's little-endian "
                  "float16 bytes, base64-encoded (2 bytes per dimension)")


class EmbedJSON(BaseModel):
    """An embeddings request as JSON: images in base64, texts as strings; at least one of them."""

    images: list[ImageIn | str] = Field(default_factory=list,
                                        description="base64 images, or objects with a name")
    texts: list[str] = Field(default_factory=list, description="raw texts (no template is applied)")
    encoding: Encoding = Field("float", description=_ENCODING_HELP)


class ImageEmbedding(BaseModel):
    """One image's embedding, under the name the request gave it."""

    name: str
    embedding: list[float] | str = Field(description="L2-normalised; " + _ENCODING_HELP)


class TextEmbedding(BaseModel):
    """One text's embedding, beside the text."""

    text: str
    embedding: list[float] | str = Field(description="L2-normalised; " + _ENCODING_HELP)


class EmbeddingsResponse(BaseModel):
    """The answer of POST /v1/embeddings: each image's and text's vector, from one model version."""

    model_version: str = Field(description="the version whose image AND text encoders answered")
    dim: int = Field(description="the length of every embedding")
    encoding: Encoding
    images: list[ImageEmbedding]
    texts: list[TextEmbedding]
    time_ms: float

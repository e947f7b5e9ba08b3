"""Embeddings of uploaded images and of texts: the served version's L2-normalised feature vectors.

An image's embedding is exactly the feature vector classify ranks with: it takes the same path,
decoded with the served version's transform and encoded in a micro-batch of the shared
:class:`~service.batching.MicroBatcher`. A text's embedding is the text tower's normalised
feature of the raw text, no template (:func:`zscl_core.encode_texts`, which every head goes
through), so it equals the row of a head built with the one template ``"{}"``. Images and texts
of one request come from one version, read once, as in classify.

Texts are encoded on a :class:`~service.head_builder.HeadBuilder` of their own, never on the
thread pool that decodes cached requests' images (the head builder's isolation rule): bounded
threads at a lower priority, ``QueueFull`` (429) past its queue, one encoding for identical
concurrent requests. Its small cache answers a repeated request's texts without the text tower;
they never enter the heads' cache, whose entries a swap rebuilds.

Over-long texts are refused (422 naming the text), not truncated as open_clip's tokenizer would
silently do: the embedding of a cut text is not the embedding of the text sent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from records.errors import InvalidRequest, QueueFull
from zscl_core import HeadCache, encode_texts

from .batching import MicroBatcher
from .head_builder import HeadBuilder
from .imaging import preprocess_images
from .serving import ModelHolder, ServedModel

__all__ = [
    "ENCODINGS",
    "MAX_TEXT_CHARS",
    "TEXT_CACHE_ENTRIES",
    "EmbedLimits",
    "Embedder",
    "Embeddings",
    "as_base64_float16",
    "over_long_texts",
]

logger = logging.getLogger(__name__)

ENCODINGS = ("float", "base64")
MAX_TEXT_CHARS = 1_000  # bounds the tokenizer's work; a 77-token context holds ~300 characters
TEXT_CACHE_ENTRIES = 16  # requests' text embeddings kept by the embedder's own builder


@dataclass(frozen=True)
class EmbedLimits:
    """The caps an embeddings request is checked against (the ZSCL_MAX_* settings)."""

    max_batch_images: int
    max_image_pixels: int
    max_texts: int
    max_text_chars: int = MAX_TEXT_CHARS


@dataclass
class Embeddings:
    """What one embed call returns: image and text features from one version, on the host."""

    version: str
    names: list[str]
    images: torch.Tensor  # (len(names), dim) float32, on the host
    texts: list[str]
    text_features: torch.Tensor  # (len(texts), dim) float32, on the host
    seconds: float

    @property
    def dim(self) -> int:
        """The length of every vector, read from the images or, with none, the texts."""
        return (self.images if len(self.names) else self.text_features).shape[1]


def as_base64_float16(vectors: torch.Tensor) -> list[str]:
    """Each row as the base64 of its little-endian float16 bytes (``numpy.frombuffer(
    base64.b64decode(s), '<f2')`` reads it back)."""
    rows = vectors.to("cpu", torch.float16).contiguous().numpy().astype("<f2", copy=False)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]


def over_long_texts(tokenizer: Callable, texts: Sequence[str]) -> list[int]:
    """The indices of the texts that need more tokens than the tokenizer's context length (start
    and end tokens included), which its ``__call__`` would truncate.

    The texts are tokenized one position longer than the context: a text that fits leaves that
    position as padding (what an empty text has there). A tokenizer without ``context_length``,
    or whose call takes none, cannot be asked, and nothing is reported (it truncates as it does).
    """
    context = getattr(tokenizer, "context_length", None)
    if not context or not texts:
        return []
    try:
        tokens = tokenizer([*texts, ""], context_length=context + 1)
    except TypeError:
        return []
    last = tokens[:, -1]
    return [i for i, token in enumerate(last[:-1].tolist()) if token != int(last[-1])]


class _Miss(Exception):
    """Texts whose embeddings are not cached (see :meth:`Embedder._texts`)."""


def _report_miss() -> torch.Tensor:
    raise _Miss


def _encode(served: ServedModel, texts: list[str], should_stop: Callable[[], bool]) -> torch.Tensor:
    """The texts' embeddings, (n, dim) float32 on the host, normalised in float32 as a head's
    rows are (:meth:`ServedModel.build_head`); on a builder thread. InvalidRequest names an
    over-long text."""
    over = over_long_texts(served.tokenizer, texts)
    if over:
        context = served.tokenizer.context_length
        raise InvalidRequest(f"text {over[0]} ({texts[over[0]][:40]!r}...) is longer than the "
                             f"model's context of {context} tokens (its start and end tokens "
                             f"included); shorten it or split it into several texts"
                             + (f" ({len(over)} texts are too long)" if len(over) > 1 else ""))
    with torch.inference_mode():
        features = encode_texts(served.model, served.tokenizer, texts, device=served.device,
                                should_stop=should_stop)
        return F.normalize(features.to("cpu", torch.float32), dim=-1)


class Embedder:
    """Embeds images and texts with the served model (one version per request).

    Args:
        holder: the served model; read once per request.
        batcher: encodes the images, in the micro-batches classify's images share.
        text_builder: encodes the texts, on threads of its own (its cache keeps recent requests'
            text embeddings; give it a cache of its own, never the heads').
        limits: the caps on images and texts per request.
    """

    def __init__(self, holder: ModelHolder, batcher: MicroBatcher, text_builder: HeadBuilder,
                 limits: EmbedLimits):
        self.holder = holder
        self.batcher = batcher
        self.text_builder = text_builder
        self.limits = limits

    def check(self, n_images: int, texts: Sequence) -> list[str]:
        """The texts, if the request is within the caps; InvalidRequest naming what is not."""
        limits = self.limits
        if n_images == 0 and not texts:
            raise InvalidRequest("send at least one image or one text to embed")
        if n_images > limits.max_batch_images:
            raise InvalidRequest(f"{n_images} images is more than the limit of "
                                 f"{limits.max_batch_images} per request; split the batch")
        if len(texts) > limits.max_texts:
            raise InvalidRequest(f"{len(texts)} texts is more than the limit of {limits.max_texts} "
                                 f"per request (ZSCL_MAX_EMBED_TEXTS); split them over several "
                                 f"requests")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidRequest(f"texts must be strings; text {index} is a "
                                     f"{type(text).__name__}")
            if len(text) > limits.max_text_chars:
                raise InvalidRequest(f"text {index} ({text[:40]!r}...) has {len(text)} characters, "
                                     f"more than the limit of {limits.max_text_chars}; shorten it")
            if not text.strip():
                raise InvalidRequest(f"texts must be non-empty; text {index} is blank")
        return list(texts)

    async def _texts(self, served: ServedModel, texts: list[str]) -> torch.Tensor:
        """The texts' embeddings from the builder's cache, or encoded by the builder. A request
        cancelled meanwhile (its client gone) leaves the encoding to whoever else waits for it,
        and it stops at its next chunk when nobody does."""
        key = HeadCache.key(served.version, texts, ())  # no templates: never a head's key
        try:
            return self.text_builder.cache.get_or_build(key, _report_miss)
        except _Miss:
            pass
        try:
            return await self.text_builder.get(key, partial(_encode, served, texts),
                                               threading.Event())
        except QueueFull as exc:  # the builder's own message is about classify's label heads
            builder = self.text_builder
            raise QueueFull(f"too many texts requests are being encoded ({builder.pending}: "
                            f"{builder.threads} at a time and ZSCL_HEAD_BUILD_QUEUE="
                            f"{builder.queue_max} waiting); retry after the Retry-After delay",
                            retry_after_s=exc.retry_after_s) from exc

    async def _decode(self, served: ServedModel, files: list[tuple[str, bytes]]) -> torch.Tensor:
        """The images preprocessed for ``served`` on a worker thread, their room in the inference
        queue reserved (``QueueFull`` when full), as classify decodes them."""
        self.batcher.admit(len(files))
        try:
            return await asyncio.to_thread(preprocess_images, files, served.request_transform,
                                           max_pixels=self.limits.max_image_pixels)
        except BaseException:
            self.batcher.release(len(files))
            raise

    async def embed(self, files: list[tuple[str, bytes]], texts: Sequence[str] = ()) -> Embeddings:
        """The embeddings of each (filename, bytes) image and each text.

        The texts are encoded first (a request waiting for the text builder holds no room in
        the inference queue), then the images are decoded and join the next micro-batch.
        """
        started = time.perf_counter()
        texts = self.check(len(files), texts)
        served = self.holder.require()  # this request's one version, for images and texts alike
        empty = torch.empty(0, 0)
        text_features = await self._texts(served, texts) if texts else empty
        images = empty
        if files:
            images = await self.batcher.features(served, await self._decode(served, files))
        return Embeddings(served.version, [name for name, _ in files], images, texts,
                          text_features, time.perf_counter() - started)

"""Zero-shot classification of uploaded images, tying decoding, heads and batching together."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from records.errors import ClientGone, InvalidRequest, PayloadTooLarge
from records.label_sets import get_label_set
from zscl_core import DEFAULT_TEMPLATES, WorkAbandoned

from .batching import MicroBatcher
from .imaging import preprocess_images
from .schemas import check_labels, check_templates
from .serving import ModelHolder, ServedModel

__all__ = ["Limits", "Classification", "Classifier", "check_label_set"]


@dataclass(frozen=True)
class Limits:
    """The caps a classify request is checked against (the ZSCL_MAX_* settings)."""

    max_labels: int
    max_batch_images: int
    max_image_pixels: int
    max_templates: int
    max_prompts: int = 1024


def check_label_set(labels: Sequence[str], templates: Sequence[str] | None, limits: Limits
                    ) -> tuple[list[str], list[str] | None]:
    """Labels and templates as classify accepts them: strings, well-formed, within the caps.

    Classify checks every request with it, and ``PUT /v1/label-sets`` checks what it stores,
    so that a stored label set is always usable. No templates (None or empty: the defaults)
    come back as None.

    Raises:
        InvalidRequest: naming the label, template or cap.
    """
    try:
        labels = check_labels(list(labels))
        templates = check_templates(list(templates) if templates else None)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if len(labels) > limits.max_labels:
        raise InvalidRequest(f"{len(labels)} labels is more than the limit of "
                             f"{limits.max_labels}; split them over several requests")
    n_templates = len(templates) if templates is not None else len(DEFAULT_TEMPLATES)
    if n_templates > limits.max_templates:
        raise InvalidRequest(f"{n_templates} templates is more than the limit of "
                             f"{limits.max_templates}")
    if len(labels) * n_templates > limits.max_prompts:
        raise PayloadTooLarge(f"{len(labels)} labels x {n_templates} templates = "
                              f"{len(labels) * n_templates} prompts to encode is more than the limit "
                              f"of {limits.max_prompts} per request (ZSCL_MAX_PROMPTS); use fewer "
                              f"labels or templates, or split the labels over several requests")
    return labels, templates


async def _watch(disconnected: Callable[[], Awaitable[bool]], gone: threading.Event,
                 every_s: float = 0.2) -> None:
    """Set ``gone`` once the client has disconnected (polled; cancelled when work ends)."""
    while not gone.is_set():
        if await disconnected():
            gone.set()
            return
        await asyncio.sleep(every_s)


@dataclass
class Classification:
    """What one classify call returns: each image's ranked labels, from one version."""

    version: str
    names: list[str]
    ranked: list[list[tuple[str, float]]]  # per image: (label, probability), best first
    seconds: float
    labels: list[str]  # every candidate label, as checked
    keep_default: bool = False  # the label set keeps its images for feedback


class Classifier:
    """Classifies images against labels with the served model (one version per request)."""

    def __init__(self, holder: ModelHolder, batcher: MicroBatcher,
                 session_factory: sessionmaker[Session], limits: Limits):
        self.holder = holder
        self.batcher = batcher
        self._sessions = session_factory
        self.limits = limits

    def _resolve(self, labels: Sequence[str] | None, label_set: str | None,
                 templates: Sequence[str] | None) -> tuple[list[str], list[str], bool]:
        """The labels and templates to rank with, and whether the label set keeps images."""
        if (labels is None) == (label_set is None):
            raise InvalidRequest("give either 'labels' (a list of candidate labels) or 'label_set' "
                                 "(the name of a stored label set), not both or neither")
        keep = False
        if label_set is not None:
            with self._sessions() as session:
                row = get_label_set(session, label_set)
                labels, stored_templates, keep = row.classnames, row.templates, row.keep_images
            templates = templates or stored_templates
        labels, templates = check_label_set(labels, templates, self.limits)
        templates = templates or list(DEFAULT_TEMPLATES)
        return labels, templates, bool(keep)

    def check_batch(self, n_images: int) -> None:
        """Refuse an empty batch, or one over ``max_batch_images``, before any image is decoded."""
        if n_images < 1:
            raise InvalidRequest("send at least one image")
        if n_images > self.limits.max_batch_images:
            raise InvalidRequest(f"{n_images} images is more than the limit of "
                                 f"{self.limits.max_batch_images} per request; split the batch")

    async def _decode(self, served: ServedModel, files: list[tuple[str, bytes]]):
        """The images preprocessed for ``served``, on a worker thread, with their room in the
        inference queue reserved (``QueueFull`` when it is full) for :meth:`MicroBatcher.submit`."""
        self.batcher.admit(len(files))
        try:
            return await asyncio.to_thread(preprocess_images, files, served.request_transform,
                                           max_pixels=self.limits.max_image_pixels)
        except BaseException:
            self.batcher.release(len(files))
            raise

    async def classify(self, files: list[tuple[str, bytes]], *, labels: Sequence[str] | None = None,
                       label_set: str | None = None, templates: Sequence[str] | None = None,
                       top_k: int = 5,
                       disconnected: Callable[[], Awaitable[bool]] | None = None
                       ) -> Classification:
        """Rank the labels for each (filename, bytes) image.

        ``disconnected`` (the request's ``is_disconnected``) is polled while the labels' head is
        encoded; when the client has gone, the encoding stops at its next chunk (``ClientGone``),
        unless another request waits for the same head.

        The labels' head comes from the cache, or is built by the holder's head builder, never
        on the threads that decode images: a request whose labels are cached never queues
        behind another's build. A build that the builder cannot take is ``QueueFull`` (429).
        The images are decoded once the head is ready, so a request waiting for a build holds
        no room in the inference queue.
        """
        started = time.perf_counter()
        self.check_batch(len(files))
        if top_k < 1:
            raise InvalidRequest("top_k must be at least 1")
        served = self.holder.require()  # this request's one version, for images and text alike
        gone = threading.Event()
        watcher: asyncio.Task | None = None

        def watch() -> None:  # only while a head is built: a cached request starts no task
            nonlocal watcher
            if disconnected is not None:
                watcher = asyncio.create_task(_watch(disconnected, gone))

        try:
            # labels sent inline are checked here (a tenth of a millisecond for 1,000 labels,
            # less than a hop to a thread and back); a label set is read from the database
            resolve = partial(self._resolve, labels, label_set, templates)
            classnames, tmpl, keep = resolve() if label_set is None else await asyncio.to_thread(resolve)
            head = await self.holder.head(served, classnames, tmpl, gone, on_miss=watch)
            if gone.is_set():  # it left meanwhile (e.g. while a build it shared went on for others)
                raise ClientGone("the client disconnected while its labels' head was built")
            pixels = await self._decode(served, files)
        except WorkAbandoned as exc:
            raise ClientGone(f"the client disconnected; {exc}") from exc
        finally:
            if watcher is not None:
                watcher.cancel()
        ranked = await self.batcher.submit(served, pixels, head, top_k)
        return Classification(served.version, [name for name, _ in files],
                              [[(classnames[i], p) for i, p in row] for row in ranked],
                              time.perf_counter() - started, classnames, keep)

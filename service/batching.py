"""Dynamic micro-batching: concurrent classify requests share one image forward pass.

Requests put their preprocessed images in a queue. One inference thread takes the first waiting
job, then keeps adding jobs until the batch holds ``max_size`` images, ``max_wait_s`` has passed,
or nobody else is on the way (so a lone request never waits for company); it runs the batch and
hands each request its answer, then gathers the next batch itself. The event loop only queues
jobs and receives answers: a busy loop (parsing HTTP for many connections) never leaves the
model idle between batches. Jobs of different model versions (during a swap) are encoded
separately, each by its own model.

Each request gets its image features on the host: the inference thread makes one host copy per
batch (on CUDA: pixels staged in pinned memory and copied over asynchronously, features copied
back into pinned memory, then one synchronisation, on that thread). A request then ranks on the
host, against the host copy of its text head that the head cache keeps, so no coroutine ever
waits on the device from the event loop, behind the next batch's forward.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from records.errors import NotReady, QueueFull

from .serving import ServedModel

__all__ = ["MicroBatcher", "Ranked", "rank", "to_device", "to_host"]

logger = logging.getLogger(__name__)

Ranked = list[list[tuple[int, float]]]  # per image: (class index, probability), best first


@dataclass(eq=False)
class _Job:
    served: ServedModel
    pixels: torch.Tensor  # (n, 3, H, W)
    future: asyncio.Future  # the images' float32 features on the host, (n, dim)


def rank(served: ServedModel, features: torch.Tensor, head: torch.Tensor, top_k: int) -> Ranked:
    """The ``top_k`` labels of each image, by the served model's scaled-cosine softmax, in float32.

    The service calls it on the event loop with host tensors (:func:`run_batch`'s features and
    :meth:`ServedModel.build_head`'s head), where it never waits on a device."""
    logits = served.logit_scale * features.float() @ head.to(features.device, torch.float32)
    probs = logits.softmax(dim=-1)
    values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [list(zip(i.tolist(), v.tolist())) for i, v in zip(indices.cpu(), values.cpu())]


def to_device(pixels: list[torch.Tensor], device: str) -> torch.Tensor:
    """The jobs' pixels as one batch on ``device``. On CUDA they are concatenated into pinned
    memory and copied asynchronously (the forward queues behind the copy on the same stream);
    elsewhere they are only concatenated (:meth:`ServedModel.encode_images` moves them)."""
    if torch.device(device).type != "cuda":
        return torch.cat(pixels)
    staged = torch.empty((sum(len(p) for p in pixels), *pixels[0].shape[1:]),
                         dtype=pixels[0].dtype, pin_memory=True)
    torch.cat(pixels, out=staged)
    # torch's pinned-memory cache keeps ``staged`` from reuse until this copy has completed
    return staged.to(device, non_blocking=True)


def to_host(features: torch.Tensor) -> torch.Tensor:
    """``features`` on the host: the batch's one copy and one device synchronisation. On CUDA
    the copy goes into pinned memory without blocking, then this thread waits for the stream."""
    if features.device.type == "cpu":
        return features
    if features.device.type != "cuda":
        return features.cpu()
    host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
    host.copy_(features, non_blocking=True)
    torch.cuda.current_stream(features.device).synchronize()
    return host


def run_batch(jobs: list[_Job]) -> list[torch.Tensor | BaseException]:
    """Encode the jobs' images, one forward per model version: each job's float32 image
    features, on the host (:func:`to_host`, one copy per forward).

    Only the forward runs here, on the inference thread; each request ranks its own labels
    (:func:`rank`, about a millisecond at most) when its features arrive. Every small torch call on
    this thread lets go of Python's lock and must win it back from the threads parsing HTTP,
    so the fewer it makes, the less the model idles."""
    results: dict[int, torch.Tensor | BaseException] = {}
    by_model: dict[int, list[_Job]] = {}
    for job in jobs:
        by_model.setdefault(id(job.served), []).append(job)
    for group in by_model.values():
        served = group[0].served
        try:
            pixels = to_device([job.pixels for job in group], served.device)
            features = to_host(served.encode_images(pixels))
            for job, part in zip(group, features.split([len(job.pixels) for job in group])):
                results[id(job)] = part
        except Exception as exc:  # e.g. out of memory: fail these jobs only, keep serving
            logger.exception("inference failed for a batch of %d jobs", len(group))
            for job in group:
                results[id(job)] = exc
    return [results[id(job)] for job in jobs]


def _settle(jobs: list[_Job], results: list[torch.Tensor | BaseException]) -> None:
    for job, result in zip(jobs, results):
        if job.future.done():  # the client went away
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)


class MicroBatcher:
    """Collects concurrent jobs into batches for one inference thread.

    Args:
        max_size: most images in one forward pass.
        max_wait_s: longest a job waits for others to join its batch.
        queue_max: most images waiting; beyond it ``submit`` raises :class:`QueueFull` (429).
        on_batch: called with each batch's image count (metrics), on the inference thread.
    """

    def __init__(self, *, max_size: int, max_wait_s: float, queue_max: int,
                 on_batch: Callable[[int], None] | None = None):
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.queue_max = queue_max
        self._on_batch = on_batch
        self._cond = threading.Condition()  # guards the queue and the two counts below
        self._queue: deque[_Job] = deque()
        self._waiting_images = 0
        self._incoming = 0  # requests decoding their images: more work is on the way
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        """Images waiting for inference."""
        return self._waiting_images

    def start(self) -> None:
        """Start the inference thread; answers go to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="zscl-infer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop after the batch in progress; jobs still queued fail with ``NotReady`` (503)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with self._cond:
            left, self._queue = list(self._queue), deque()
            self._waiting_images = 0
        for job in left:
            if not job.future.done():
                job.future.set_exception(NotReady("the server is shutting down; retry the "
                                                  "request on another replica or in a moment"))

    def admit(self, n_images: int) -> None:
        """Reserve room for a request's images before it decodes them; 429 when full."""
        with self._cond:
            if self._waiting_images + self._incoming + n_images > self.queue_max:
                raise QueueFull(f"the inference queue is full ({self.queue_max} images waiting); "
                                f"retry after the Retry-After delay or send smaller batches")
            self._incoming += n_images

    def release(self, n_images: int) -> None:
        """Give back a reservation whose images will not be submitted (e.g. a corrupt file)."""
        with self._cond:
            self._incoming -= n_images
            self._cond.notify_all()  # a batch waiting for these images need not wait longer

    async def submit(self, served: ServedModel, pixels: torch.Tensor, head: torch.Tensor,
                     top_k: int) -> Ranked:
        """Rank ``head``'s labels for each image; the images join the next batch.

        Call :meth:`admit` first with ``len(pixels)``. ``head`` is best on the host (as
        :meth:`ServedModel.build_head` gives it): the ranking runs here, on the event loop.
        """
        features = await self.features(served, pixels)
        return rank(served, features, head, top_k)  # here, not on the inference thread

    async def features(self, served: ServedModel, pixels: torch.Tensor) -> torch.Tensor:
        """The images' float32 features on the host, (n, dim): what :meth:`submit` ranks with
        (``POST /v1/embeddings`` answers them). The images join the next batch; call
        :meth:`admit` first with ``len(pixels)``."""
        n = len(pixels)
        job = _Job(served, pixels, asyncio.get_running_loop().create_future())
        with self._cond:
            self._incoming -= n
            if self._thread is None or self._stopping:
                raise NotReady("the server is shutting down; retry the request on another "
                               "replica or in a moment")
            self._waiting_images += n
            self._queue.append(job)
            self._cond.notify_all()
        return await job.future

    def _gather(self) -> list[_Job] | None:
        """The next batch (None when stopping), under the lock, on the inference thread."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._queue.popleft()
            batch, size = [first], len(first.pixels)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_size and not self._stopping:
                if self._queue:
                    job = self._queue.popleft()
                    batch.append(job)
                    size += len(job.pixels)
                    continue
                remaining = deadline - time.monotonic()
                if self._incoming <= 0 or remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._waiting_images -= size
            return batch

    def _serve(self) -> None:
        while (batch := self._gather()) is not None:
            try:
                if self._on_batch:
                    self._on_batch(sum(len(job.pixels) for job in batch))
                results = run_batch(batch)
            except Exception as exc:  # a bug: fail this batch, never the thread (later
                logger.exception("a batch of %d jobs failed", len(batch))  # jobs would hang)
                results = [exc] * len(batch)
            try:
                self._loop.call_soon_threadsafe(_settle, batch, results)
            except RuntimeError:  # the loop has closed: nobody is waiting
                return

"""Dynamic micro-batching: concurrent classify requests share one image forward pass.

Requests put their preprocessed images in a queue. One collector takes the first waiting job,
then keeps adding jobs until the batch holds ``max_size`` images, ``max_wait_s`` has passed, or
nobody else is on the way (so a lone request never waits for company). The batch runs on a
single inference thread, off the event loop; while it runs the next batch gathers. Jobs of
different model versions (during a swap) are encoded separately, each by its own model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from records.errors import QueueFull

from .serving import ServedModel

__all__ = ["MicroBatcher", "Ranked", "rank"]

logger = logging.getLogger(__name__)

Ranked = list[list[tuple[int, float]]]  # per image: (class index, probability), best first


@dataclass(eq=False)
class _Job:
    served: ServedModel
    pixels: torch.Tensor  # (n, 3, H, W)
    head: torch.Tensor    # (dim, classes), built by the same ``served``
    top_k: int
    future: asyncio.Future


def rank(served: ServedModel, features: torch.Tensor, head: torch.Tensor, top_k: int) -> Ranked:
    """The ``top_k`` labels of each image, by the served model's scaled-cosine softmax."""
    probs = (served.logit_scale * features @ head.to(features.device)).softmax(dim=-1)
    values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [list(zip(i.tolist(), v.tolist())) for i, v in zip(indices.cpu(), values.cpu())]


def run_batch(jobs: list[_Job]) -> list[Ranked | BaseException]:
    """Encode the jobs' images (one forward per model version) and rank each job's labels."""
    results: dict[int, Ranked | BaseException] = {}
    by_model: dict[int, list[_Job]] = {}
    for job in jobs:
        by_model.setdefault(id(job.served), []).append(job)
    for group in by_model.values():
        served = group[0].served
        try:
            features = served.encode_images(torch.cat([job.pixels for job in group]))
            start = 0
            for job in group:
                stop = start + len(job.pixels)
                results[id(job)] = rank(served, features[start:stop], job.head, job.top_k)
                start = stop
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: fail these jobs only
            logger.exception("inference failed for a batch of %d jobs", len(group))
            for job in group:
                results[id(job)] = exc
    return [results[id(job)] for job in jobs]


class MicroBatcher:
    """Collects concurrent jobs into batches for one inference thread.

    Args:
        max_size: most images in one forward pass.
        max_wait_s: longest a job waits for others to join its batch.
        queue_max: most images waiting; beyond it ``submit`` raises :class:`QueueFull` (429).
        on_batch: called with each batch's image count (metrics).
    """

    def __init__(self, *, max_size: int, max_wait_s: float, queue_max: int,
                 on_batch: Callable[[int], None] | None = None):
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.queue_max = queue_max
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._waiting_images = 0
        self._incoming = 0  # requests decoding their images: more work is on the way
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zscl-infer")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Images waiting for inference."""
        return self._waiting_images

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="zscl-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    def admit(self, n_images: int) -> None:
        """Reserve room for a request's images before it decodes them; 429 when full."""
        if self._waiting_images + self._incoming + n_images > self.queue_max:
            raise QueueFull(f"the inference queue is full ({self.queue_max} images waiting); "
                            f"retry after the Retry-After delay or send smaller batches")
        self._incoming += n_images

    def release(self, n_images: int) -> None:
        """Give back a reservation whose images will not be submitted (e.g. a corrupt file)."""
        self._incoming -= n_images

    async def submit(self, served: ServedModel, pixels: torch.Tensor, head: torch.Tensor,
                     top_k: int) -> Ranked:
        """Rank ``head``'s labels for each image; the images join the next batch.

        Call :meth:`admit` first with ``len(pixels)``.
        """
        n = len(pixels)
        self._incoming -= n
        self._waiting_images += n
        job = _Job(served, pixels, head, top_k, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        first = await self._queue.get()
        batch, size = [first], len(first.pixels)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if self._incoming <= 0 or remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            batch.append(job)
            size += len(job.pixels)
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            images = sum(len(job.pixels) for job in batch)
            self._waiting_images -= images
            if self._on_batch:
                self._on_batch(images)
            results = await loop.run_in_executor(self._executor, run_batch, batch)
            for job, result in zip(batch, results):
                if job.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

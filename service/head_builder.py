"""Text heads built on threads of their own: bounded, one build per head, abandoned when unwanted.

A head-cache miss costs seconds of text-tower work (1,000 labels x 1 template on the starter,
about 4.5 s on 2 CPU cores). Built on asyncio's default thread pool, which also decodes cached
requests' images, reaps jobs and loads swapped-in versions, six concurrent misses filled that
pool on 2 cores and a cached request waited 58.7 s instead of 0.12 s. So every build (a
request's miss, a label set's warm-up, a swap's re-warm) runs here instead:

- on ``threads`` threads of their own, at a lower OS priority (Linux: ``nice`` is per thread,
  and the torch threads a builder starts inherit it), so that cached requests' decoding and
  inference win the cores while a build runs;
- at most ``threads + queue_max`` builds at once: a request that would make one more gets
  :class:`~records.errors.QueueFull` (429) with a Retry-After of the recent build time, instead
  of waiting behind minutes of other requests' builds;
- one build per head: requests that miss a head while it is built wait for that build;
- a build stops at its next chunk of prompts once every request waiting for it has gone
  (``should_stop``, :class:`~zscl_core.WorkAbandoned`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

import torch

from records.errors import QueueFull
from zscl_core import HeadCache
from zscl_core.heads import HeadKey

__all__ = ["HeadBuilder"]

logger = logging.getLogger(__name__)

Encode = Callable[[Callable[[], bool]], torch.Tensor]  # encode(should_stop) -> head
MEAN_WEIGHT = 0.3  # weight of the newest build in the running mean that sets Retry-After


@dataclass(eq=False)
class _Build:
    key: HeadKey
    encode: Encode
    # one entry per caller waiting: its "gone" event, or None for a caller that always stays
    waiters: list[threading.Event | None]
    future: Future = field(default_factory=Future)
    abandoned: bool = False


def _lower_priority(increment: int) -> None:
    """Raise this thread's nice value by ``increment`` (Linux, where it is per thread; threads
    started from here, such as torch's OpenMP team, inherit it). Never fails: a refusal is
    logged and the thread keeps its priority."""
    if increment <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + increment))
    except OSError as exc:
        logger.warning("head builder keeps its priority (%s)", exc)


class HeadBuilder:
    """Builds text heads into ``cache`` on threads of its own.

    Args:
        cache: where built heads go (a finished build is cached before its callers hear of it).
        threads: builds that run at once (``ZSCL_HEAD_BUILDERS``).
        queue_max: builds that may wait for a thread beyond those (``ZSCL_HEAD_BUILD_QUEUE``);
            an admitted build past ``threads + queue_max`` raises :class:`QueueFull`.
        nice: how much lower the builders' OS priority is than the process's (``nice``
            increment, Linux; 0 keeps it) (``ZSCL_HEAD_BUILD_NICE``).
    """

    def __init__(self, cache: HeadCache, *, threads: int = 1, queue_max: int = 4, nice: int = 10):
        if threads < 1 or queue_max < 0:
            raise ValueError("a head builder needs threads >= 1 and queue_max >= 0")
        self.cache = cache
        self.threads = threads
        self.queue_max = queue_max
        self.nice = nice
        self._queue: queue.SimpleQueue[_Build] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []  # started with the first build
        self._lock = threading.Lock()  # guards _workers, the four below, every _Build's waiters
        self._builds: dict[HeadKey, _Build] = {}
        self._pending = 0  # builds submitted and not finished, running or waiting
        self._mean_s: float | None = None
        self.built = 0

    @property
    def pending(self) -> int:
        """Builds running or waiting for a thread."""
        return self._pending

    @property
    def retry_after_s(self) -> int:
        """Seconds a refused caller should wait: about one build's time, while threads free up."""
        return max(1, math.ceil(self._mean_s or 1.0))

    def submit(self, key: HeadKey, encode: Encode, gone: threading.Event | None = None, *,
               admit: bool = True) -> Future:
        """The future head for ``key``: the build in progress for it if there is one, else a
        new build calling ``encode(should_stop)`` on a builder thread. Never blocks.

        Args:
            key: the head's cache key.
            encode: builds the head; ``should_stop()`` turns True once every caller waiting for
                this build has gone, and ``encode`` should then raise ``WorkAbandoned``.
            gone: set when this caller has gone (its client disconnected); None: it stays.
            admit: False for work the service itself needs done (a swap's re-warm): never
                refused, but counted.

        Raises:
            QueueFull: a new build would exceed ``threads + queue_max`` (joining one never does).
        """
        with self._lock:
            build = self._builds.get(key)
            if build is not None and not build.abandoned:
                build.waiters.append(gone)
                return build.future
            if admit and self._pending >= self.threads + self.queue_max:
                raise QueueFull(self._busy_message(), retry_after_s=self.retry_after_s)
            build = _Build(key, encode, [gone])
            self._builds[key] = build
            self._pending += 1
            while len(self._workers) < self.threads:
                self._workers.append(threading.Thread(target=self._work, daemon=True,
                                                      name=f"zscl-heads-{len(self._workers)}"))
                self._workers[-1].start()
        self._queue.put(build)
        return build.future

    async def get(self, key: HeadKey, encode: Encode, gone: threading.Event | None = None, *,
                  admit: bool = True) -> torch.Tensor:
        """:meth:`submit`, awaited. Cancelling the caller sets ``gone`` and leaves the build to
        whoever else waits for it (it is never cancelled for them)."""
        waited = asyncio.wrap_future(self.submit(key, encode, gone, admit=admit))
        waited.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        try:
            return await asyncio.shield(waited)
        except asyncio.CancelledError:
            if gone is not None:
                gone.set()
            raise

    def _busy_message(self) -> str:
        return (f"too many text heads are being built ({self._pending}: "
                f"ZSCL_HEAD_BUILDERS={self.threads} at a time and ZSCL_HEAD_BUILD_QUEUE="
                f"{self.queue_max} waiting); these labels are not in the head cache, so their head "
                f"must be built first. Retry after the Retry-After delay, store the labels once "
                f"as a label set (PUT /v1/label-sets/{{name}}) so their head is built ahead of "
                f"requests, or raise ZSCL_HEAD_BUILD_QUEUE")

    def _should_stop(self, build: _Build) -> bool:
        """True once every caller of ``build`` has gone; a later caller then starts afresh."""
        with self._lock:
            if build.abandoned:
                return True
            if any(gone is None or not gone.is_set() for gone in build.waiters):
                return False
            build.abandoned = True
            if self._builds.get(build.key) is build:
                del self._builds[build.key]
            return True

    def _work(self) -> None:
        """A builder thread. A daemon: a build in progress never holds up the process's exit
        (a head is only a cache fill), unlike the non-daemon threads of ``ThreadPoolExecutor``,
        which would first run every queued build."""
        _lower_priority(self.nice)
        while True:
            self._run(self._queue.get())

    def _run(self, build: _Build) -> None:
        if not build.future.set_running_or_notify_cancel():
            outcome = None
        else:
            started = time.perf_counter()
            try:
                head = build.encode(partial(self._should_stop, build))
                self.cache.warm(build.key, lambda: head)  # cached before anyone hears of it
                outcome = partial(build.future.set_result, head)
                self._record(time.perf_counter() - started)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller waiting
                outcome = partial(build.future.set_exception, exc)
        with self._lock:
            self._pending -= 1
            if self._builds.get(build.key) is build:
                del self._builds[build.key]
        if outcome is not None:
            outcome()

    def _record(self, seconds: float) -> None:
        with self._lock:
            self.built += 1
            self._mean_s = seconds if self._mean_s is None else \
                (1 - MEAN_WEIGHT) * self._mean_s + MEAN_WEIGHT * seconds

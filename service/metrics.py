"""Prometheus metrics, one registry per app (so several apps can live in one test process).

`zscl serve` may run several API processes on one port (``Settings.api_processes``). It then
starts them with ``PROMETHEUS_MULTIPROC_DIR`` naming a fresh directory, which prometheus_client
reads when it is imported: every value then lives in a per-process file there, and ``/metrics``
(:meth:`Metrics.render`) reads every process's files, whichever process answers. Counters and
histograms are summed; each gauge says how its processes combine (``multiprocess_mode``). The
values kept outside prometheus_client (head-cache hits and misses, the queue depth) are copied
into real metrics by :meth:`Metrics.sync`: at every scrape, and every
:data:`SYNC_INTERVAL_S` in each process (``service.app``) so that the processes that do not
answer the scrape are counted too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from zscl_core import HeadCache

from .loop_watch import TICK_S

__all__ = ["Metrics", "SYNC_INTERVAL_S"]

logger = logging.getLogger(__name__)

# seconds: one ladder, 5 ms to 30 s; a request's latency starts lower, a head build goes on longer
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.002, *_SECONDS)
LAG_BUCKETS = _SECONDS
HEAD_BUCKETS = (*_SECONDS, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SYNC_INTERVAL_S = 1.0  # how stale another process's head-cache counts and queue depth may be
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's variable, not a ZSCL_ one


def shared_across_processes() -> bool:
    """Whether prometheus_client runs in multiprocess mode in this process.

    The library decides once, when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``, before any
    settings exist; asking it (rather than a setting) means /metrics can never render the
    wrong kind of registry."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def _forget_dead_processes(directory: str) -> None:
    """Drop the live gauges (queue depth, served version) of API processes that died, such as
    one uvicorn's supervisor replaced after a crash: only the processes running now count.
    Their counters stay in the sums, as a counter must never go down."""
    for path in Path(directory).glob("gauge_live*_*.db"):  # gauge_<mode>_<pid>.db
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.info("metrics: API process %d is gone; dropping its gauges", pid)
            with contextlib.suppress(FileNotFoundError):  # another scrape dropped them first
                mark_process_dead(pid, directory)
        except PermissionError:  # alive, owned by another user
            continue


class Metrics:
    """The service's metrics; :meth:`render` is what ``/metrics`` answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("zscl_http_requests", "HTTP requests",
                                ["route", "method", "status", "model_version"], registry=self.registry)
        self.latency = Histogram("zscl_http_request_seconds", "HTTP request latency",
                                 ["route", "method", "model_version"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_size = Histogram("zscl_inference_batch_images", "Images per forward pass",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.images = Counter("zscl_classified_images", "Images classified", ["model_version"],
                              registry=self.registry)
        self.embedded = Counter("zscl_embedded_inputs", "Images and texts embedded (POST "
                                "/v1/embeddings), by kind", ["model_version", "kind"],
                                registry=self.registry)
        self.swaps = Counter("zscl_model_swaps", "Model swaps", ["trigger"], registry=self.registry)
        self.swap_failures = Counter("zscl_model_swap_failures", "Versions that failed to load",
                                     registry=self.registry)
        self.served = Gauge("zscl_model_served", "API processes serving this version (1 for the "
                            "served version with one process)", ["model_version"],
                            multiprocess_mode="livesum", registry=self.registry)
        self.generation = Gauge("zscl_model_generation", "Pointer generation of the served "
                                "version (with several API processes, of the one furthest "
                                "behind; 0 while one serves nothing yet)",
                                multiprocess_mode="livemin", registry=self.registry)
        self.head_build = Histogram("zscl_head_build_seconds",
                                    "Time to build one text head for the cache, by cause: a "
                                    "request's miss, a stored label set, a swap's rebuilding",
                                    ["cause"], buckets=HEAD_BUCKETS, registry=self.registry)
        self.head_hits = Counter("zscl_head_cache_hits", "Text-head cache hits",
                                 registry=self.registry)
        self.head_misses = Counter("zscl_head_cache_misses", "Text-head cache misses",
                                   registry=self.registry)
        self.queue_images = Gauge("zscl_inference_queue_images", "Images waiting for inference",
                                  multiprocess_mode="livesum", registry=self.registry)
        self.feedback = Counter("zscl_feedback_answers", "Answers to kept predictions, by the "
                                "version that made the prediction and whether it was right "
                                "(confirmed) or not (corrected)", ["model_version", "outcome"],
                                registry=self.registry)
        self.live_accuracy = Gauge("zscl_feedback_live_accuracy", "Top-1 accuracy of a version "
                                   "on the predictions users answered (all answers on record)",
                                   ["model_version"], multiprocess_mode="mostrecent",
                                   registry=self.registry)
        self.live_items = Gauge("zscl_feedback_live_items", "Answered predictions of a version "
                                "(the count behind zscl_feedback_live_accuracy)",
                                ["model_version"], multiprocess_mode="mostrecent",
                                registry=self.registry)
        self.loop_lag = Histogram("zscl_event_loop_lag_seconds", f"How late the event loop ran a "
                                  f"beat due every {TICK_S} s: how long any request could have "
                                  f"waited for the loop (service.loop_watch; with several API "
                                  f"processes, summed: each stall's log line names its process)",
                                  buckets=LAG_BUCKETS, registry=self.registry)
        self._heads: HeadCache | None = None
        self._queue_depth: Callable[[], int] = lambda: 0
        self._synced_hits = self._synced_misses = 0
        self._sync_lock = threading.Lock()  # the event loop syncs while a scrape renders

    @property
    def shared(self) -> bool:
        """Whether /metrics sums every API process's files (see :func:`shared_across_processes`)."""
        return shared_across_processes()

    def watch(self, heads: HeadCache, queue_depth: Callable[[], int]) -> None:
        """Follow the values kept outside these metrics; :meth:`sync` copies them in."""
        self._heads = heads
        self._queue_depth = queue_depth

    def sync(self) -> None:
        """Copy the head cache's hit and miss counts (as increments) and the queue depth into
        the metrics. Safe from any thread."""
        with self._sync_lock:  # two syncs at once would both add the same increments
            if self._heads is not None:
                hits, misses = self._heads.hits, self._heads.misses
                self.head_hits.inc(max(0, hits - self._synced_hits))
                self.head_misses.inc(max(0, misses - self._synced_misses))
                self._synced_hits, self._synced_misses = hits, misses
            self.queue_images.set(self._queue_depth())

    def render(self) -> bytes:
        """The Prometheus text exposition: this process's registry, or with several API
        processes every process's files, summed. Blocking (it reads those files): call it on a
        worker thread, not on the event loop."""
        self.sync()
        if not self.shared:
            return generate_latest(self.registry)
        directory = os.environ[MULTIPROC_DIR_ENV]  # set, or the library would not be shared
        _forget_dead_processes(directory)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, path=directory)
        return generate_latest(every_process)

    def set_live_accuracy(self, versions: dict[str, dict]) -> None:
        """Record live accuracy: ``{version: {"items", "accuracy"}}`` (``records.feedback``)."""
        for version, score in versions.items():
            self.live_accuracy.labels(version).set(score["accuracy"])
            self.live_items.labels(version).set(score["items"])

    def on_head_built(self, cause: str, seconds: float) -> None:
        """The model holder's callback: time one text-head build, by what caused it."""
        self.head_build.labels(cause).observe(seconds)

    def on_swap(self, old, new, trigger: str) -> None:
        """The model holder's callback after a swap: mark the served version and count the swap."""
        if old is not None:
            self.served.labels(old.version).set(0)
        self.served.labels(new.version).set(1)
        self.generation.set(new.generation)
        self.swaps.labels(trigger).inc()

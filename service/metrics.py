"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from zscl_core import HeadCache

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HEAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _LiveCollector(Collector):
    """Values read at scrape time: head-cache counters and the inference queue depth."""

    def __init__(self, heads: HeadCache, queue_depth):
        self._heads = heads
        self._queue_depth = queue_depth

    def collect(self):
        hits = CounterMetricFamily("zscl_head_cache_hits", "Text-head cache hits")
        hits.add_metric([], self._heads.hits)
        misses = CounterMetricFamily("zscl_head_cache_misses", "Text-head cache misses")
        misses.add_metric([], self._heads.misses)
        depth = GaugeMetricFamily("zscl_inference_queue_images", "Images waiting for inference")
        depth.add_metric([], self._queue_depth())
        return [hits, misses, depth]


class Metrics:
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
        self.swaps = Counter("zscl_model_swaps", "Model swaps", ["trigger"], registry=self.registry)
        self.swap_failures = Counter("zscl_model_swap_failures", "Versions that failed to load",
                                     registry=self.registry)
        self.served = Gauge("zscl_model_served", "1 for the served version", ["model_version"],
                            registry=self.registry)
        self.generation = Gauge("zscl_model_generation", "Pointer generation of the served version",
                                registry=self.registry)
        self.head_build = Histogram("zscl_head_build_seconds",
                                    "Time to build one text head for the cache, by cause: a "
                                    "request's miss, a stored label set, a swap's rebuilding",
                                    ["cause"], buckets=HEAD_BUCKETS, registry=self.registry)

    def watch(self, heads: HeadCache, queue_depth) -> None:
        self.registry.register(_LiveCollector(heads, queue_depth))

    def on_head_built(self, cause: str, seconds: float) -> None:
        self.head_build.labels(cause).observe(seconds)

    def on_swap(self, old, new, trigger: str) -> None:
        if old is not None:
            self.served.labels(old.version).set(0)
        self.served.labels(new.version).set(1)
        self.generation.set(new.generation)
        self.swaps.labels(trigger).inc()

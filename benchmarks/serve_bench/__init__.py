"""Serving benchmark: /v1/classify over HTTP beside the model's raw batched forward and LitServe.

One run, one model on one device (``--device cpu|cuda|cuda:N``), for each request size
(``--images-per-request``, images per multipart request) and each concurrency (``--concurrency``,
open keep-alive connections):
1. service: a real ``zscl serve`` process (``ZSCL_DEVICE``, its default precision, HTTP processes
   and max batch for the device); img/s, requests/s, p50 and p99 latency, mean images per forward
   (its /metrics, where one scrape sees every process), and page faults and CPU milliseconds per
   image of its processes (Linux): the CPU beyond the raw forward's is the host's work per image
   outside the forward (HTTP, decoding, ranking);
2. raw: the served model's batched image forward in-process (``service.serving.load_served`` at the
   served precision), batch = the service's max batch for the device, plus the ranking matmul
   with a cached head, on a thread of its own, synchronised on CUDA: the ceiling the service can
   approach; latency is one batch's time;
3. LitServe: the same model behind LitServe's dynamic batching (``benchmarks.litserve_peer``:
   the same loading, decoding, heads and forward, the same max batch and batch wait; on a GPU
   several inference workers and its ZeroMQ queue), measured by the same client;
4. ratios service/raw and service/LitServe (img/s), and the client's own ceiling: the same client
   processes and connections against the service's trivial ``/livez``.
Each (request size, concurrency) runs in rounds (``--rounds``) in which the three take turns, so
that the load of a shared machine falls on them alike; then
5. a 1,000-label request to the service: latency on a text-head cache miss (new labels) against a
   hit.

The load comes from ``--client-procs`` processes, each with its share of the connections,
replaying prepared requests with a minimal asyncio client (``client``, uvloop where installed);
their latencies are merged.

    python -m benchmarks.serve_bench                              # tiny model, CPU
    python -m benchmarks.serve_bench --model starter              # the offline starter
    python -m benchmarks.serve_bench --model ViT-B-16 --device cuda --concurrency 32,128 \\
        --images-per-request 1,32 --images cifar10/test --seconds 6 --json bench.json

``run(argv)`` returns every figure as plain data (see ``run``); ``main`` prints the tables.

Modules: ``inputs`` (model presets, images, prepared requests), ``client`` (the load client
processes), ``servers`` (``zscl serve`` and the LitServe peer: start, wait, read, stop), ``raw``
(the in-process forward), ``measure`` (rounds, rows, ratios), ``report`` (the tables), ``cli``
(arguments, settings, the run).
"""

from .cli import build_parser, main, resolve, run
from .client import CHILD_TIMEOUT_S, ClientPool, client_process_main
from .inputs import (GENERATED_IMAGES, LABELS, MAX_IMAGES, MAX_REQUESTS_PER_SET, PRESETS, get_request,
                     materialise, multipart_request, read_images, request_set, synthetic_jpegs)
from .measure import (big_label_latency, group_row, http_measurer, measure_all, percentile, summarise,
                      timed)
from .raw import load_raw, raw_forward, service_forward, tower_dtype
from .report import format_report
from .servers import (REPO, Servers, free_port, litserve_batches, process_tree,
                      service_batches, sigterm_as_exit, start_litserve, start_server, stop_server,
                      stop_servers, wait_ready)

__all__ = [
    "CHILD_TIMEOUT_S", "GENERATED_IMAGES", "LABELS", "MAX_IMAGES", "MAX_REQUESTS_PER_SET", "PRESETS",
    "REPO", "ClientPool", "Servers", "big_label_latency", "build_parser", "client_process_main",
    "format_report", "free_port", "get_request", "group_row", "http_measurer", "litserve_batches",
    "load_raw", "main", "materialise", "measure_all", "multipart_request",
    "percentile", "process_tree", "raw_forward", "read_images", "request_set", "resolve", "run",
    "service_batches", "service_forward", "sigterm_as_exit", "start_litserve", "start_server",
    "stop_server", "stop_servers", "summarise", "synthetic_jpegs", "timed", "tower_dtype", "wait_ready",
]

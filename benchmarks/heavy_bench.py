"""Cached-label latency while heavy requests (head-cache misses) run: issue 20, item 2.

A request with 1,000 labels the server has not seen costs seconds of text-tower work (its head
is built). This measures what that does to everyone else, on a real ``zscl serve`` process
(started with ``benchmarks.serve_bench``'s helpers, the product's defaults for the device).
In each of ``--rounds`` rounds:

1. idle: ``--idle-requests`` sequential one-image requests whose labels are cached (10 labels,
   1 template);
2. busy: the same request, sent sequentially for ``--seconds``, while ``--heavy`` clients each
   keep one one-image request with ``--labels`` new labels (new labels every time, 1 template)
   in flight; a heavy request refused with 429 is sent again (new labels) after its
   Retry-After. At the end of the phase the heavy clients hang up, the server abandons their
   builds, and the next round starts once it has had ``--drain-s`` to do so.

Then it prints p50, p99 and max of each phase over all rounds, the ratio of the busy p99 to the
idle p99 (target: at most 2x on 2 CPU cores), and what the heavy requests got. The rounds
alternate so that the load of a shared machine falls on both phases alike.

    python -m benchmarks.heavy_bench --model starter   # builds the starter once into --store
    python -m benchmarks.heavy_bench --model tiny      # a quick run on the tiny CLIP

The server reads the rest of its settings from this process's environment, e.g.
``ZSCL_HEAD_BUILDERS``, ``ZSCL_HEAD_BUILD_QUEUE``, ``ZSCL_HEAD_BUILD_NICE`` (docs/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.serve_bench import (LABELS, REPO, free_port, materialise, percentile, sigterm_as_exit,
                                    start_server, stop_server, synthetic_jpegs, wait_ready)

logger = logging.getLogger("benchmarks.heavy_bench")

TEMPLATES = ["a photo of a {}."]
HEAVY_TIMEOUT_S = 600  # a heavy request may wait for several builds before its own


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heavy_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="'tiny', 'small', 'starter' or a ZSCL_MODEL "
                        "source (default: tiny)")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--store", type=Path, default=REPO / "var" / "bench-versions",
                        help="where --model starter is built once and kept (default: var/bench-versions)")
    parser.add_argument("--heavy", type=int, default=16, help="clients sending new-label requests")
    parser.add_argument("--labels", type=int, default=1000, help="new labels per heavy request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-requests", type=int, default=60, help="per round")
    parser.add_argument("--seconds", type=float, default=20.0, help="the busy phase, per round")
    parser.add_argument("--drain-s", type=float, default=5.0, help="after each busy phase")
    parser.add_argument("--image-size", type=int, default=512, help="the JPEG's side in pixels")
    parser.add_argument("--log", type=Path, default=None, help="keep the server's log here")
    return parser


def _payload(image: str, labels: list[str]) -> dict:
    return {"images": [{"name": "x.jpg", "data": image}], "labels": labels, "templates": TEMPLATES,
            "top_k": 5}


def _cached_latencies(client, image: str, *, count: int | None = None,
                      until: float | None = None) -> list[float]:
    """Sequential cached-label requests: ``count`` of them, or until ``until`` (monotonic)."""
    latencies = []
    while (count is not None and len(latencies) < count) or (until is not None and time.monotonic() < until):
        started = time.perf_counter()
        response = client.post("/v1/classify", json=_payload(image, LABELS))
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
    return latencies


class HeavyLoad:
    """``n`` clients on an event loop of their own (in a thread), each keeping one new-label
    request in flight; :meth:`stop` cancels them, which closes their connections."""

    def __init__(self, url: str, image: str, n: int, n_labels: int):
        self.url, self.image, self.n, self.n_labels = url, image, n, n_labels
        self.answered: list[float] = []
        self.refused = 0
        self.retry_after: list[int] = []
        self.failed: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._clients: list[concurrent.futures.Future] = []

    def start(self) -> None:
        self._clients = [asyncio.run_coroutine_threadsafe(self._client(), self._loop)
                         for _ in range(self.n)]

    def stop(self) -> None:
        for client in self._clients:
            client.cancel()
        concurrent.futures.wait(self._clients, timeout=30)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _client(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.url, timeout=HEAVY_TIMEOUT_S) as client:
            while True:
                labels = [f"object {i} {uuid.uuid4().hex[:8]}" for i in range(self.n_labels)]
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/classify", json=_payload(self.image, labels))
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    return
                if response.status_code == 200:
                    self.answered.append(time.perf_counter() - started)
                elif response.status_code == 429:
                    self.refused += 1
                    self.retry_after.append(int(response.headers.get("Retry-After", "1")))
                    await asyncio.sleep(self.retry_after[-1])
                else:
                    self.failed.append(f"{response.status_code}: {response.text[:200]}")


def _row(latencies: list[float]) -> dict:
    ms = [t * 1000 for t in latencies]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms)}


def _measure(url: str, image: str, args: argparse.Namespace, heavy: HeavyLoad) -> tuple[list, list]:
    import httpx

    idle, busy = [], []
    with httpx.Client(base_url=url, timeout=HEAVY_TIMEOUT_S) as client:
        _cached_latencies(client, image, count=5)  # builds the cached labels' head, warms up
        for round_ in range(args.rounds):
            idle += _cached_latencies(client, image, count=args.idle_requests)
            heavy.start()
            time.sleep(1.0)  # every heavy client has sent its first request
            busy += _cached_latencies(client, image, until=time.monotonic() + args.seconds)
            heavy.stop()
            logger.info("round %d of %d: %d idle, %d busy cached requests so far; %d heavy answered",
                        round_ + 1, args.rounds, len(idle), len(busy), len(heavy.answered))
            time.sleep(args.drain_s)  # the hung-up heavy requests' builds are abandoned
    return idle, busy


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark; every figure as plain data: ``config``, ``idle`` and ``busy`` (``n``,
    ``p50_ms``, ``p99_ms``, ``max_ms``), ``p99_ratio`` and ``heavy`` (``answered``,
    ``answered_p50_s``, ``refused``, ``retry_after_s`` (median), ``failed``)."""
    args = build_parser().parse_args(argv)
    image = base64.b64encode(synthetic_jpegs(args.image_size, 1)[0]).decode()
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="zscl-heavy-") as tmp:
        tmp = Path(tmp)
        if args.model == "starter":
            from zscl_core.starter import ensure_starter

            logger.info("the starter model from %s (built there first if missing, 1-3 minutes)", args.store)
            version_dir = Path(ensure_starter(args.store))
        else:
            version_dir = materialise(args.model, args.pretrained, tmp / "data")
        port, log = free_port(), tmp / "service.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_server(tmp / "data", version_dir, port, log, batch=8, wait_ms=5.0)
        heavy = HeavyLoad(url, image, args.heavy, args.labels)
        try:
            wait_ready(url, proc, log)
            idle, busy = _measure(url, image, args, heavy)
        finally:
            heavy.close()
            stop_server(proc, group=True)
            if args.log:
                args.log.write_text(log.read_text())
    result = {"config": {"model": args.model, "cpus": os.cpu_count(), "image_size": args.image_size,
                         "heavy": args.heavy, "labels": args.labels, "rounds": args.rounds,
                         "seconds": args.seconds},
              "idle": _row(idle), "busy": _row(busy)}
    result["p99_ratio"] = result["busy"]["p99_ms"] / result["idle"]["p99_ms"]
    result["heavy"] = {"answered": len(heavy.answered),
                       "answered_p50_s": statistics.median(heavy.answered) if heavy.answered else None,
                       "refused": heavy.refused,
                       "retry_after_s": statistics.median(heavy.retry_after) if heavy.retry_after else None,
                       "failed": heavy.failed}
    return result


def format_report(result: dict) -> str:
    config, heavy = result["config"], result["heavy"]
    lines = [f"model {config['model']}, {config['cpus']} CPUs, one {config['image_size']}x"
             f"{config['image_size']} JPEG per request, cached labels {len(LABELS)} x 1 template, "
             f"{config['rounds']} rounds",
             f"{'cached-label request':34}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
    for name, key in (("idle", "idle"), (f"with {config['heavy']} heavy clients", "busy")):
        row = result[key]
        lines.append(f"  {name:32}{row['n']:>6}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}"
                     f"{row['max_ms']:>10.1f}")
    lines.append(f"p99 busy / idle: {result['p99_ratio']:.2f}x (target <= 2x)")
    answered_p50 = heavy["answered_p50_s"]
    lines.append(f"heavy requests ({config['labels']} new labels each, {config['rounds']} x "
                 f"{config['seconds']:.0f} s): {heavy['answered']} answered"
                 + (f" (p50 {answered_p50:.1f} s)" if answered_p50 is not None else "")
                 + f", {heavy['refused']} refused with 429"
                 + (f" (Retry-After {heavy['retry_after_s']:.0f} s)" if heavy["retry_after_s"] else "")
                 + f", {len(heavy['failed'])} failed")
    lines.extend(f"  failed: {failure}" for failure in heavy["failed"][:5])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="  .. %(message)s")
    logger.setLevel(logging.INFO)
    print(format_report(run(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

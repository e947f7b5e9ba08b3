"""The measurements: each (request size, concurrency) in rounds in which the service, the raw
forward and LitServe take turns; the parts summarised into rows (pooled latencies, percentiles,
mean batch, page faults) with their ratios; and the many-label head-cache miss."""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import statistics
import time
import uuid
from collections.abc import Callable, Iterator

from .client import ClientPool
from .inputs import request_set
from .servers import Servers, process_tree

logger = logging.getLogger(__name__)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile with linear interpolation (numpy's default), or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(parts: list[dict], images_per_request: int) -> dict:
    """One row from the rounds of one measurement: counts over wall time summed, pooled latencies
    (a request's, or a raw batch's), mean images per forward, and page faults and CPU time
    per image where every round has them."""
    wall = sum(p["wall_s"] for p in parts)
    images = sum(p["images"] for p in parts)
    latencies = [t for p in parts for t in p["latencies"]]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    batches = [p.get("batches") for p in parts]
    return {"images": images, "requests": sum(p["requests"] for p in parts), "wall_s": wall,
            "img_s": images / wall if wall else 0.0,
            "req_s": sum(p["requests"] for p in parts) / wall if wall else 0.0,
            "images_per_request": images_per_request,
            "p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000,
            "errors": sum(p["errors"] for p in parts),
            "mean_batch": (sum(b[1] for b in batches) / sum(b[0] for b in batches)
                           if None not in batches and sum(b[0] for b in batches) else None),
            "faults_per_image": _per_image(parts, "faults", images),
            "cpu_ms_per_image": None if (cpu := _per_image(parts, "cpu_s", images)) is None else cpu * 1000}


def _per_image(parts: list[dict], key: str, images: int) -> float | None:
    """``key`` summed over the parts, per image; None unless every part has it."""
    if not images or any(p.get(key) is None for p in parts):
        return None
    return sum(p[key] for p in parts) / images


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record how long the block took under ``name`` (and log it)."""
    logger.info("%s ...", name)
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
        logger.info("%s: %.1f s", name, timings[name])


def big_label_latency(url: str, image: bytes, n_labels: int, repeats: int) -> dict:
    """Median latency of a one-image request with ``n_labels`` new labels (the text head is
    built: a cache miss) against the same labels again (a hit)."""
    import httpx

    encoded = base64.b64encode(image).decode()
    misses, hits = [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        def once(labels: list[str]) -> float:
            started = time.perf_counter()
            response = client.post("/v1/classify", json={
                "images": [{"name": "x.jpg", "data": encoded}], "labels": labels,
                "templates": ["a photo of a {}."], "top_k": 5})
            response.raise_for_status()
            return time.perf_counter() - started

        once(["warm", "up"])
        for _ in range(repeats):
            labels = [f"object {i} {uuid.uuid4().hex[:6]}" for i in range(n_labels)]
            misses.append(once(labels))
            hits.extend(once(labels) for _ in range(3))
    return {"labels": n_labels, "miss_ms": statistics.median(misses) * 1000,
            "hit_ms": statistics.median(hits) * 1000}


def http_measurer(pool: ClientPool, servers: Servers, name: str, images: list[bytes]
                  ) -> Callable[[int, int, float], dict]:
    """``measure(images_per_request, concurrency, seconds)``: one part against server ``name``,
    with its forwards (the service's only where its /metrics saw every image, i.e. every HTTP
    process), and the page faults and CPU seconds of the server's processes."""
    port, proc = servers.ports[name], servers.procs[name]
    sets: dict[int, list[bytes]] = {}

    def measure(size: int, concurrency: int, seconds: float) -> dict:
        if size not in sets:
            sets[size] = request_set(f"127.0.0.1:{port}", images, size)
        tree = process_tree(proc.pid)
        before = servers.batches(name)
        part = pool.measure("127.0.0.1", port, f"{name}-{size}", sets[size], concurrency, seconds, size)
        after = servers.batches(name)
        if tree is not None and (now := process_tree(proc.pid)) is not None:
            part["faults"], part["cpu_s"] = now[0] - tree[0], now[1] - tree[1]
        if before is not None and after is not None:
            forwards, forwarded = after[0] - before[0], after[1] - before[1]
            if name != "service" or forwarded == part["served_requests"] * size:
                part["batches"] = (forwards, forwarded)
        return part

    return measure


def measure_all(measurers: dict[str, Callable[[int, int, float], dict]],
                ceiling: Callable[[int, float], dict], plan: dict, timings: dict[str, float],
                alone: Callable[[str], contextlib.AbstractContextManager] | None = None) -> list[dict]:
    """Every measurer at every (request size, concurrency), side by side: each measurement is
    split into rounds that take the measurers in turn (the order rotating), so that a change in
    the machine's load falls on all of them alike; the client's ceiling (against the service)
    once per concurrency. ``alone(name)`` wraps each part of measurer ``name`` (and the
    ceiling's as "service"): ``Servers.only``, pausing the idle servers."""
    alone = alone or (lambda name: contextlib.nullcontext())
    round_s = plan["seconds"] / plan["rounds"]
    ceilings: dict[int, dict] = {}
    results = []
    for size in plan["images_per_request"]:
        for c in plan["concurrency"]:
            name = f"measure: {size} image(s) per request, concurrency {c}"
            with timed(timings, name):
                if c not in ceilings:
                    with alone("service"):
                        ceilings[c] = summarise([ceiling(c, round_s)], 1)
                parts: dict[str, list[dict]] = {m: [] for m in measurers}
                order = list(measurers)
                for r in range(plan["rounds"]):
                    for m in order[r % len(order):] + order[:r % len(order)]:
                        with alone(m):
                            parts[m].append(measurers[m](size, c, round_s))
            rows = {m: summarise(parts[m], plan["batch"] if m == "raw" else size) for m in measurers}
            results.append(group_row(size, c, rows, ceilings[c]))
            logger.info("%s: %s", name, ", ".join(f"{m} {row['img_s']:.1f} img/s" for m, row in rows.items()))
    return results


def group_row(size: int, concurrency: int, rows: dict[str, dict], ceiling: dict) -> dict:
    """One (request size, concurrency): the systems' rows (``litserve`` only where it ran), the
    ratios and the client ceiling."""
    def ratio(peer: str) -> float | None:
        if peer not in rows or not rows[peer]["img_s"]:
            return None
        return rows["service"]["img_s"] / rows[peer]["img_s"]

    return {"images_per_request": size, "concurrency": concurrency, **rows,
            "service_over_raw": ratio("raw"), "service_over_litserve": ratio("litserve"),
            "client_ceiling": ceiling, "client_ceiling_rps": ceiling["req_s"]}

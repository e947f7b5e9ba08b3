"""Serving benchmark: /v1/classify over HTTP beside the model's raw batched forward and LitServe.

One run, one model, one image size, at each concurrency (default 1, 8 and 32):
1. service: a real `zscl serve` process; clients send one-image multipart requests over
   keep-alive connections; throughput, p50 and p99 latency;
2. raw: the model's batched image forward in-process, no HTTP and no decoding (batch = the
   concurrency, at most the server's max batch size), plus the ranking matmul with a cached head:
   the ceiling the service can approach; latency is one batch's time;
3. LitServe: the same model behind LitServe's own dynamic batching (``benchmarks.litserve_peer``:
   the same loading, decoding, heads and forward as the service, the same max batch size and
   batch wait), started the same way and measured by the same client;
4. ratios service/raw and service/LitServe (throughput), and the service process's page faults
   per image (Linux), which show whether its allocator reuses memory (``records.runtime``).
Each level runs in rounds (``--rounds``) in which the three take turns, so that the load of a
shared machine falls on them alike; then
5. a 1,000-label request to the service: latency on a text-head cache miss (new labels) against
   a hit.

    python -m benchmarks.serve_bench                       # the tiny test model
    python -m benchmarks.serve_bench --model starter       # the offline starter (built first)
    python -m benchmarks.serve_bench --model ViT-B-32      # any ZSCL_MODEL source
    python -m benchmarks.serve_bench --model starter --no-tune-malloc   # glibc's malloc defaults
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

logger = logging.getLogger("serve_bench")

REPO = Path(__file__).resolve().parents[1]

def _clip_cfg(image: int, patch: int, width: int, layers: int, text_width: int, text_layers: int) -> dict:
    return {"model_cfg": {
        "embed_dim": min(width, 256),
        "vision_cfg": {"image_size": image, "layers": layers, "width": width, "patch_size": patch,
                       "head_width": 32 if width <= 64 else 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": text_width,
                     "heads": max(2, text_width // 64), "layers": text_layers}},
        "preprocess_cfg": {"size": image, "mean": [0.5] * 3, "std": [0.5] * 3,
                           "interpolation": "bilinear", "resize_mode": "squash"}}


# Built-in architectures (random weights: speed does not depend on them).
# tiny: the tests' model, so cheap that HTTP handling dominates;
# small: ~0.6 GFLOP per image, where the model's compute dominates, as with real CLIPs.
PRESETS = {"tiny": _clip_cfg(32, 8, 64, 2, 64, 2), "small": _clip_cfg(64, 8, 256, 6, 256, 4)}
LABELS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "plane", "flower", "person"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def raw_forward(served, image_size: int, batch: int, seconds: float) -> dict:
    """The in-process batched forward + ranking with a cached head, for ``seconds``: images done,
    wall time, and each batch's time as every one of its images' latency.

    It runs on a thread of its own, as the service's forward runs on its inference thread
    (where the process is left at glibc's malloc defaults, see ``records.runtime``, the main
    thread's heap made the same forward ~35% slower than a thread's here)."""
    from service.batching import rank  # the service's own ranking

    pixels = torch.stack([served.preprocess(Image.open(io.BytesIO(_png(image_size, i))))
                          for i in range(batch)])
    head = served.build_head(LABELS, ["a photo of a {}."])

    def step():
        rank(served, served.encode_images(pixels), head, 3)

    def run() -> dict:
        step()
        times: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(times) < 3:
            begun = time.perf_counter()
            step()
            times.append(time.perf_counter() - begun)
        return {"images": len(times) * batch, "wall_s": time.perf_counter() - started,
                "latencies": [t for t in times for _ in range(batch)], "errors": 0}

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-forward") as pool:
        return pool.submit(run).result()


def summarise(parts: list[dict], concurrency: int) -> dict:
    """One row from the rounds of one level: images over wall time summed, pooled latencies."""
    latencies = [t for part in parts for t in part["latencies"]]
    return {"concurrency": concurrency, "images": sum(p["images"] for p in parts),
            "img_per_s": sum(p["images"] for p in parts) / sum(p["wall_s"] for p in parts),
            "p50_ms": _percentile(latencies, 50) * 1000, "p99_ms": _percentile(latencies, 99) * 1000,
            "errors": sum(p["errors"] for p in parts),
            "faults_per_image": (sum(p["faults"] for p in parts) / sum(p["images"] for p in parts)
                                 if all("faults" in p for p in parts) else None)}


def minor_faults(pid: int) -> int | None:
    """The page faults a process has taken without disk I/O (Linux: /proc/PID/stat), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[7])  # minflt, the 10th field of stat(5); the split starts at the 3rd


def multipart_request(host: str, image: bytes, labels: list[str], top_k: int = 3) -> bytes:
    """One complete HTTP/1.1 keep-alive classify request, built once and replayed."""
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="x.png"\r\n'
              f"Content-Type: image/png\r\n\r\n").encode() + image + b"\r\n"]
    for name, value in (("labels", ",".join(labels)), ("templates", "a photo of a {}."), ("top_k", str(top_k))):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def http_level(host: str, port: int, concurrency: int, total: int, requests: list[bytes]) -> dict:
    """``total`` requests from ``concurrency`` keep-alive connections (after one warm-up request
    each): images done, wall time, latencies, errors. A minimal HTTP client, so that the load
    generator, sharing the machine, costs as little CPU as possible."""
    latencies: list[float] = []
    errors = 0
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]

    async def worker(reader, writer, jobs):
        nonlocal errors
        for i in jobs:
            started = time.perf_counter()
            status = await _exchange(reader, writer, requests[i % len(requests)])
            latencies.append(time.perf_counter() - started)
            errors += status != 200

    await asyncio.gather(*[worker(r, w, range(1)) for r, w in connections])  # warm-up
    latencies.clear()
    counter = iter(range(total))
    started = time.perf_counter()
    await asyncio.gather(*[worker(r, w, counter) for r, w in connections])
    wall = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return {"images": total, "wall_s": wall, "latencies": latencies, "errors": errors}


def big_label_latency(url: str, image: bytes, n_labels: int, repeats: int) -> dict:
    """Median latency of a one-image request with ``n_labels`` new labels (the text head is
    built: a cache miss) against the same labels again (a hit)."""
    encoded = base64.b64encode(image).decode()
    misses, hits = [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        def once(labels: list[str]) -> float:
            started = time.perf_counter()
            response = client.post("/v1/classify", json={
                "images": [{"name": "x.png", "data": encoded}], "labels": labels,
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


def start_server(data_dir: Path, version_dir: Path, port: int, threads: int, batch: int,
                 wait_ms: float, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ZSCL_DATA_DIR": str(data_dir), "ZSCL_MODEL": str(version_dir),
           "ZSCL_PORT": str(port), "ZSCL_TORCH_THREADS": str(threads), "ZSCL_BATCH_MAX_SIZE": str(batch),
           "ZSCL_BATCH_MAX_WAIT_MS": str(wait_ms),
           # no update jobs here: the embedded worker's start (~3 s of CPU after /readyz) would
           # land on the first measurements
           "ZSCL_START_WORKER": "false"}
    env.pop("ZSCL_REDIS_URL", None)
    env.pop("ZSCL_INFERENCE_KEY", None)
    return subprocess.Popen([sys.executable, "-m", "zscl_cli", "serve", "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def start_litserve(version_dir: Path, port: int, threads: int, batch: int, wait_ms: float,
                   log: Path) -> subprocess.Popen:
    """The LitServe peer (``benchmarks.litserve_peer``); its own session, so that stopping it
    reaches its HTTP and inference worker processes too."""
    command = [sys.executable, "-m", "benchmarks.litserve_peer", str(version_dir), "--port", str(port),
               "--threads", str(threads), "--batch", str(batch), "--wait-ms", str(wait_ms)]
    return subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_server(proc: subprocess.Popen, *, group: bool = False) -> None:
    """Ctrl-C, as a user would; kill it (its process group with ``group``: a server started in
    a session of its own) if it has not stopped within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300,
               path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def measure_levels(measurers: dict[str, Callable[[int], dict]], levels: list[int], rounds: int
                   ) -> dict[str, list[dict]]:
    """Every measurer at every concurrency, side by side: each level is split into rounds that
    take the measurers in turn (the order rotating), so that a change in the machine's load
    falls on all of them alike. ``measurers[name](concurrency)`` measures one round."""
    rows: dict[str, list[dict]] = {name: [] for name in measurers}
    for c in levels:
        parts: dict[str, list[dict]] = {name: [] for name in measurers}
        for r in range(rounds):
            names = list(measurers)
            for name in names[r % len(names):] + names[:r % len(names)]:
                parts[name].append(measurers[name](c))
        for name in measurers:
            rows[name].append(summarise(parts[name], c))
            _progress(f"{name} concurrency {c}: {rows[name][-1]['img_per_s']:.1f} img/s")
    return rows


def start_servers(args, data_dir: Path, version_dir: Path, tmp: Path
                  ) -> dict[str, tuple[int, subprocess.Popen]]:
    """The service (and the LitServe peer), each on a free port, ready; stopped on failure."""
    ports = {"service": free_port()} | ({"LitServe": free_port()} if args.litserve else {})
    procs: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        for name, port in ports.items():
            log = tmp / f"{name}.log"
            proc = (start_server(data_dir, version_dir, port, args.threads, args.batch, args.wait_ms, log)
                    if name == "service" else
                    start_litserve(version_dir, port, args.threads, args.batch, args.wait_ms, log))
            procs[name] = (port, proc)
            wait_ready(f"http://127.0.0.1:{port}", proc, log,
                       path="/readyz" if name == "service" else "/health")
    except BaseException:
        stop_servers(procs)
        raise
    return procs


def stop_servers(procs: dict[str, tuple[int, subprocess.Popen]]) -> None:
    for name, (_, proc) in procs.items():
        stop_server(proc, group=name != "service")


def print_report(header: str, rows: dict[str, list[dict]], big: dict | None, args) -> None:
    titles = {"service": "service /v1/classify (HTTP, one image per request)",
              "raw": "raw forward, batch = concurrency (in-process: no HTTP, no decoding)",
              "LitServe": f"LitServe peer /v1/classify (HTTP, max_batch_size {args.batch}, "
                          f"batch_timeout {args.wait_ms:g} ms)"}
    print(header)
    print(f"{'':<22}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name in ("service", "raw", "LitServe"):
        if name in rows:
            print(titles[name])
            for row in rows[name]:
                print(f"  concurrency {row['concurrency']:<8}{row['img_per_s']:9.1f}{row['p50_ms']:9.1f}"
                      f"{row['p99_ms']:9.1f}{row['errors']:8d}")
    peers = [name for name in ("raw", "LitServe") if name in rows]
    print(f"{'throughput ratios':<22}" + "".join(f"{'service/' + p:>18}" for p in peers))
    for i, row in enumerate(rows["service"]):
        print(f"  concurrency {row['concurrency']:<8}" + "".join(
            f"{row['img_per_s'] / rows[p][i]['img_per_s']:18.2f}" for p in peers))
    faults = [row["faults_per_image"] for row in rows["service"]]
    if None not in faults:
        print("service page faults per image (/proc): " + ", ".join(
            f"{f:.0f} at concurrency {row['concurrency']}" for f, row in zip(faults, rows["service"])))
    if big:
        print(f"{big['labels']}-label request to the service (1 image, 1 template): head cache miss "
              f"{big['miss_ms']:.1f} ms, hit {big['hit_ms']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (default), 'small', or any ZSCL_MODEL source (open_clip name, "
                             "config JSON, version dir)")
    parser.add_argument("--pretrained")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level and server (default: 48x concurrency, at least "
                             "192: rounds of seconds, so that filling and draining the pipeline "
                             "at a round's start and end weigh little)")
    parser.add_argument("--raw-seconds", type=float, default=6.0, help="raw forward time per level")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each level is measured in this many rounds, the servers and the raw "
                             "forward taking turns")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, every side (1: steady figures on a shared machine)")
    parser.add_argument("--batch", type=int, default=None,
                        help="the servers' max batch size and the largest raw batch (default: "
                             "the service's default for the device, ZSCL_BATCH_MAX_SIZE)")
    parser.add_argument("--wait-ms", type=float, default=5.0,
                        help="the servers' batch wait (the service's batch_max_wait_ms, "
                             "LitServe's batch_timeout)")
    parser.add_argument("--no-litserve", dest="litserve", action="store_false",
                        help="skip the LitServe peer")
    parser.add_argument("--no-tune-malloc", dest="tune_malloc", action="store_false", default=None,
                        help="leave glibc's malloc at its defaults on every side (the service "
                             "keeps freed memory by default, records.runtime)")
    parser.add_argument("--big-labels", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from records.runtime import tune_process
    from records.settings import Settings
    defaults = Settings()  # the product's defaults, as a user gets them
    if args.tune_malloc is None:
        args.tune_malloc = defaults.tune_malloc
    os.environ["ZSCL_TUNE_MALLOC"] = str(args.tune_malloc).lower()  # the servers read it
    # the raw forward runs under the service's process settings: an honest ceiling
    tune_process(torch_threads=args.threads, tune_malloc=args.tune_malloc)
    if args.batch is None:
        args.batch = defaults.max_batch
    from service.bootstrap import materialise_model
    from service.serving import load_served

    levels = [int(c) for c in args.concurrency.split(",")]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="zscl-bench-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model in PRESETS:
            model = str(tmp / f"{args.model}-clip.json")
            Path(model).write_text(json.dumps(PRESETS[args.model]))
        settings = Settings(data_dir=tmp / "data", model=model, pretrained=args.pretrained)
        settings.ensure_dirs()
        version_dir = materialise_model(settings)
        served = load_served(version_dir, version_dir.name, 1, "cpu")
        image_size = served.preprocess(Image.new("RGB", (8, 8))).shape[-1]
        images = [_png(image_size, seed) for seed in range(16)]
        header = (f"model {args.model}, image {image_size}x{image_size}, torch threads {args.threads}, "
                  f"batch {args.batch}, wait {args.wait_ms:g} ms, malloc tuned {args.tune_malloc}, "
                  f"{os.cpu_count()} CPUs")
        _progress(header)

        procs = start_servers(args, settings.data_dir, version_dir, tmp)
        try:
            def over_http(name: str) -> Callable[[int], dict]:
                port, proc = procs[name]
                requests = [multipart_request(f"127.0.0.1:{port}", image, LABELS) for image in images]

                def measure(c: int) -> dict:
                    before = minor_faults(proc.pid)
                    part = asyncio.run(http_level(
                        "127.0.0.1", port, c,
                        math.ceil((args.requests or max(192, 48 * c)) / args.rounds), requests))
                    after = minor_faults(proc.pid)
                    if name == "service" and None not in (before, after):  # one process; the
                        part["faults"] = after - before  # peer's inference runs in another
                    return part
                return measure

            measurers = {"service": over_http("service"),
                         "raw": lambda c: raw_forward(served, image_size, min(c, args.batch),
                                                      args.raw_seconds / args.rounds)}
            if "LitServe" in procs:
                measurers["LitServe"] = over_http("LitServe")
            rows = measure_levels(measurers, levels, args.rounds)
            big = None
            if args.big_labels:
                big = big_label_latency(f"http://127.0.0.1:{procs['service'][0]}", images[0],
                                        args.big_labels, repeats=3)
                _progress(f"{args.big_labels} labels: {big}")
        finally:
            stop_servers(procs)

    print_report(header, rows, big, args)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "big_labels": big}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: /v1/classify over HTTP beside the model's raw batched forward.

One run, one model, one image size:
1. raw: the model's batched image forward in-process (batch = the server's max batch size),
   plus the ranking matmul with a cached head: the ceiling the service can approach;
2. HTTP: a real `zscl serve` process; clients send one-image multipart requests at concurrency
   1, 8 and 32; throughput, p50 and p99 latency;
3. a 1,000-label request: latency on a text-head cache miss (new labels) against a hit.

    python -m benchmarks.serve_bench                       # the tiny test model
    python -m benchmarks.serve_bench --model ViT-B-32      # any ZSCL_MODEL source
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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


def _free_port() -> int:
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


def raw_forward(served, image_size: int, batch: int, seconds: float) -> float:
    """Images per second of the in-process batched forward + ranking, cached head."""
    pixels = torch.stack([served.preprocess(Image.open(io.BytesIO(_png(image_size, i)))) for i in range(batch)])
    head = served.build_head(LABELS, ["a photo of a {}."])
    with torch.inference_mode():
        def step():
            features = served.encode_images(pixels)
            (served.logit_scale * features @ head).softmax(-1).topk(5, dim=-1)
        step()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or done < 3:
            step()
            done += 1
        return done * batch / (time.perf_counter() - started)


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
    """``total`` requests from ``concurrency`` keep-alive connections; a minimal HTTP client so
    that the load generator, sharing the machine, costs as little CPU as possible."""
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

    await asyncio.gather(*[worker(r, w, range(2)) for r, w in connections])  # warm-up
    latencies.clear()
    counter = iter(range(total))
    started = time.perf_counter()
    await asyncio.gather(*[worker(r, w, counter) for r, w in connections])
    wall = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return {"concurrency": concurrency, "requests": total, "errors": errors, "img_per_s": total / wall,
            "p50_ms": _percentile(latencies, 50) * 1000, "p99_ms": _percentile(latencies, 99) * 1000}


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


def start_server(data_dir: Path, version_dir: Path, port: int, threads: int, batch: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ZSCL_DATA_DIR": str(data_dir), "ZSCL_MODEL": str(version_dir),
           "ZSCL_PORT": str(port), "ZSCL_TORCH_THREADS": str(threads), "ZSCL_BATCH_MAX_SIZE": str(batch)}
    env.pop("ZSCL_REDIS_URL", None)
    env.pop("ZSCL_INFERENCE_KEY", None)
    return subprocess.Popen([sys.executable, "-m", "zscl_cli", "serve", "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user would; kill it if it has not stopped within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (default), 'small', or any ZSCL_MODEL source (open_clip name, "
                             "config JSON, version dir)")
    parser.add_argument("--pretrained")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level (default: 8x concurrency, at least 64)")
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, both sides (1: steady figures on a shared machine)")
    parser.add_argument("--batch", type=int, default=32, help="the server's batch_max_size and the raw batch")
    parser.add_argument("--big-labels", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from service.bootstrap import materialise_model
    from service.serving import load_served
    from records.settings import Settings

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
                  f"batch {args.batch}, {os.cpu_count()} CPUs")
        _progress(header)
        raw_before = raw_forward(served, image_size, args.batch, args.raw_seconds)
        _progress(f"raw batched forward: {raw_before:.1f} img/s")

        port, log = _free_port(), tmp / "server.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_server(settings.data_dir, version_dir, port, args.threads, args.batch, log)
        rows, big = [], None
        try:
            wait_ready(url, proc, log)
            requests = [multipart_request(f"127.0.0.1:{port}", image, LABELS) for image in images]
            for c in (int(c) for c in args.concurrency.split(",")):
                rows.append(asyncio.run(http_level("127.0.0.1", port, c, args.requests or max(64, 8 * c),
                                                   requests)))
                _progress(f"HTTP concurrency {c}: {rows[-1]['img_per_s']:.1f} img/s")
            if args.big_labels:
                big = big_label_latency(url, images[0], args.big_labels, repeats=3)
                _progress(f"{args.big_labels} labels: {big}")
        finally:
            stop_server(proc)
        # measured again afterwards: the machine's load may have changed in between
        raw_after = raw_forward(served, image_size, args.batch, args.raw_seconds)
        raw = (raw_before + raw_after) / 2

    print(header)
    print(f"raw batched forward (in-process): {raw:9.1f} img/s  (before {raw_before:.1f}, after {raw_after:.1f})")
    print(f"{'HTTP /v1/classify':<20}{'img/s':>9}{'x raw':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for row in rows:
        print(f"  concurrency {row['concurrency']:<6}{row['img_per_s']:9.1f}{row['img_per_s'] / raw:8.2f}"
              f"{row['p50_ms']:9.1f}{row['p99_ms']:9.1f}{row['errors']:8d}")
    if big:
        print(f"{big['labels']}-label request (1 image, 1 template): head cache miss {big['miss_ms']:.1f} ms, "
              f"hit {big['hit_ms']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"raw_img_per_s": raw, "raw_before": raw_before,
                                         "raw_after": raw_after, "http": rows, "big_labels": big}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

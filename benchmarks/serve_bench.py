"""Serving benchmark: /v1/classify over HTTP beside the model's raw batched forward and LitServe.

One run, one model on one device (``--device cpu|cuda|cuda:N``), for each request size
(``--images-per-request``, images per multipart request) and each concurrency (``--concurrency``,
open keep-alive connections):
1. service: a real ``zscl serve`` process (``ZSCL_DEVICE``, its default precision, HTTP processes
   and max batch for the device); img/s, requests/s, p50 and p99 latency, mean images per forward
   (its /metrics, where one scrape sees every process) and page faults per image (Linux);
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
replaying prepared requests with a minimal asyncio client (``_Connection``, uvloop where
installed); their latencies are merged. Why not httpx: against a trivial endpoint on 2 cores its
AsyncClient spent ~920 us of CPU per request (~1,000 requests/s a process), this client ~21 us
with uvloop and ~33 us without.

    python -m benchmarks.serve_bench                              # tiny model, CPU
    python -m benchmarks.serve_bench --model starter              # the offline starter
    python -m benchmarks.serve_bench --model ViT-B-16 --device cuda --concurrency 32,128 \\
        --images-per-request 1,32 --images cifar10/test --seconds 6 --json bench.json

``run(argv)`` returns every figure as plain data (see ``run``); ``main`` prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import inspect
import io
import json
import logging
import math
import os
import pickle
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger("benchmarks.serve_bench")

REPO = Path(__file__).resolve().parents[1]
MAX_IMAGES = 512           # images read from --images (spread over its tree)
GENERATED_IMAGES = 64      # without --images
MAX_REQUESTS_PER_SET = 32  # distinct prepared requests per request size
CHILD_TIMEOUT_S = 120      # beyond a measurement's length, before a silent client process fails
LABELS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "plane", "flower", "person"]


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


# -- inputs ----------------------------------------------------------------------------------

def read_images(root: Path, limit: int = MAX_IMAGES) -> list[bytes]:
    """Up to ``limit`` JPEG files from a folder tree, spread evenly over its sorted paths (so a
    ``<class>/*.jpg`` tree gives every class)."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no .jpg files under {root}; pass a folder tree of JPEGs "
                         f"(e.g. cifar10/test) or leave --images out to generate them")
    step = max(1, len(paths) // limit)
    return [p.read_bytes() for p in paths[::step][:limit]]


def synthetic_jpegs(size: int, count: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of ``size`` px: smooth gradients and shapes with a little grain, so that
    they compress (and decode) like photos, not like noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    out = []
    for _ in range(count):
        a, b = rng.uniform(0, 255, (2, 3))
        pixels = a + (b - a) * (ramp[:, None, None] * rng.uniform(0.3, 1) + ramp[None, :, None] * rng.uniform(0, 0.7))
        image = Image.fromarray(np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = rng.uniform(0, size * 0.7, 2)
            w, h = rng.uniform(size * 0.1, size * 0.5, 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def multipart_request(host: str, images: list[bytes], labels: list[str], top_k: int = 3) -> bytes:
    """One complete HTTP/1.1 keep-alive classify request with ``images`` as repeated ``images``
    file fields, built once and replayed."""
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="x{i}.jpg"\r\n'
              f"Content-Type: image/jpeg\r\n\r\n").encode() + image + b"\r\n"
             for i, image in enumerate(images)]
    for name, value in (("labels", ",".join(labels)), ("templates", "a photo of a {}."), ("top_k", str(top_k))):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def request_set(host: str, images: list[bytes], per_request: int) -> list[bytes]:
    """Distinct requests of ``per_request`` images each, cycling through ``images``."""
    count = max(1, min(MAX_REQUESTS_PER_SET, len(images) // per_request))
    return [multipart_request(host, [images[(j * per_request + k) % len(images)] for k in range(per_request)],
                              LABELS) for j in range(count)]


def get_request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# -- statistics ------------------------------------------------------------------------------

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
    (a request's, or a raw batch's), mean images per forward and page faults where every round
    has them."""
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
            "faults_per_image": (sum(p["faults"] for p in parts) / images
                                 if images and all(p.get("faults") is not None for p in parts) else None)}


# -- load generation: runs in the client processes ------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends a prepared request, reads the whole response
    (Content-Length framed) and hands it to its phase, which sends the next or stops."""

    def __init__(self, requests: list[bytes], first: int):
        self.requests, self.next = requests, first
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.phase: _Phase | None = None
        self.need = -1
        self.busy = False
        self.started = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self) -> None:
        self.buffer.clear()
        self.need, self.busy = -1, True
        request = self.requests[self.next % len(self.requests)]
        self.next += 1
        self.started = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
            if length is None:
                raise RuntimeError("a response without Content-Length: this client cannot frame it")
            self.need = end + 4 + int(length.group(1))
        if len(self.buffer) >= self.need:
            self.busy = False
            status = int(self.buffer[9:12])
            self.phase.completed(self, time.perf_counter() - self.started, status)

    def connection_lost(self, exc) -> None:
        if self.phase is not None:
            self.phase.lost(self)


class _Phase:
    """The connections' requests until ``deadline`` (perf_counter; 0: one request each). What
    completes by the deadline counts (``ok``, ``latencies``); requests then in flight are read to
    their end but not counted, so the drain does not lower the rate (``served`` counts every
    success, for the server's own tally)."""

    def __init__(self, connections: list[_Connection], deadline: float):
        self.connections = connections
        self.deadline = deadline
        self.pending = len(connections)
        self.latencies = array("d")
        self.ok = self.served = self.errors = 0
        self.finished = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        for connection in self.connections:
            if connection.transport.is_closing():  # the server closed it since the last phase
                self.errors += 1
                self.pending -= 1
                continue
            connection.phase = self
            connection.send()
        if self.pending:
            await self.finished

    def completed(self, connection: _Connection, latency: float, status: int) -> None:
        in_time = time.perf_counter() <= self.deadline
        if status == 200:
            self.served += 1
            if in_time:
                self.ok += 1
                self.latencies.append(latency)
        else:
            self.errors += 1
        if in_time:
            connection.send()
        else:
            self._retire(connection)

    def lost(self, connection: _Connection) -> None:
        if connection.busy:  # closed under a request: it failed, and this connection is done
            connection.busy = False
            self.errors += 1
            self._retire(connection)

    def _retire(self, connection: _Connection) -> None:
        connection.phase = None
        self.pending -= 1
        if self.pending == 0 and not self.finished.done():
            self.finished.set_result(None)


async def _connect(host: str, port: int, requests: list[bytes], count: int, offset: int) -> list[_Connection]:
    loop = asyncio.get_running_loop()
    connections = []
    for i in range(count):
        _, connection = await loop.create_connection(
            lambda i=i: _Connection(requests, offset + i * 7), host, port)
        connections.append(connection)
    return connections


async def _phase(connections: list[_Connection], deadline: float) -> _Phase:
    phase = _Phase(connections, deadline)
    await phase.run()
    return phase


def _client_job(loop, channel: _Channel, job: dict) -> dict:
    """One measurement in a client process: connect, one warm-up request per connection, say
    ready, wait for go, replay requests for ``job['seconds']``: counts, latencies, and the
    window's monotonic start and end."""
    connections = loop.run_until_complete(_connect(job["host"], job["port"], job["requests"],
                                                   job["connections"], job["offset"]))
    try:
        warm = loop.run_until_complete(_phase(connections, 0.0))
        channel.send(("ready", warm.errors))
        if channel.recv()[0] != "go":
            return {"aborted": True}
        started, deadline = time.monotonic(), time.perf_counter() + job["seconds"]
        phase = loop.run_until_complete(_phase(connections, deadline))
        return {"ok": phase.ok, "served": warm.served + phase.served, "errors": phase.errors,
                "warm_errors": warm.errors, "latencies": phase.latencies.tobytes(),
                "start": started, "end": started + job["seconds"]}
    finally:
        for connection in connections:
            connection.transport.close()
        loop.run_until_complete(asyncio.sleep(0))  # the closes happen now, not at the next job


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def client_process_main() -> None:
    """A client process's loop: pickled jobs on stdin, pickled results on stdout."""
    channel = _Channel(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout = sys.stderr  # the pipe carries pickles only
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    sets: dict[str, list[bytes]] = {}
    while True:
        try:
            message = channel.recv()
        except EOFError:
            return
        if message[0] == "requests":
            sets[message[1]] = message[2]
        elif message[0] == "run":
            job = dict(message[1], requests=sets[message[1]["key"]])
            try:
                channel.send(("result", _client_job(loop, channel, job)))
            except OSError as exc:  # e.g. connection refused: tell the parent, keep serving
                channel.send(("failed", repr(exc)))


class _Channel:
    """Pickled messages over a pair of pipes."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send(self, message) -> None:
        pickle.dump(message, self.writer, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.flush()

    def recv(self, timeout: float | None = None):
        if timeout is not None and not select.select([self.reader], [], [], timeout)[0]:
            raise TimeoutError(f"no answer from a client process within {timeout:.0f} s")
        return pickle.load(self.reader)


class ClientPool:
    """``procs`` client processes that share each measurement's connections between them.

    Args:
        procs: client processes (each a Python interpreter with its own event loop).
    """

    def __init__(self, procs: int):
        command = [sys.executable, "-c",
                   "from benchmarks.serve_bench import client_process_main; client_process_main()"]
        self.procs = [subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                      for _ in range(procs)]
        self.channels = [_Channel(p.stdout, p.stdin) for p in self.procs]
        self.sent: list[set[str]] = [set() for _ in self.procs]

    def measure(self, host: str, port: int, key: str, requests: list[bytes], connections: int,
                seconds: float, images_per_request: int) -> dict:
        """``connections`` keep-alive connections spread over the processes, replaying
        ``requests`` for ``seconds`` after one warm-up request each: one measurement part."""
        shares = [connections // len(self.procs) + (i < connections % len(self.procs))
                  for i in range(len(self.procs))]
        used = [(i, n) for i, n in enumerate(shares) if n]
        for i, n in used:
            if key not in self.sent[i]:
                self.channels[i].send(("requests", key, requests))
                self.sent[i].add(key)
            self.channels[i].send(("run", {"host": host, "port": port, "key": key, "connections": n,
                                           "seconds": seconds, "offset": i * 131}))
        answers = [self._recv(i, CHILD_TIMEOUT_S) for i, _ in used]
        failed = [answer[1] for answer in answers if answer[0] == "failed"]
        ready = [i for (i, _), answer in zip(used, answers) if answer[0] == "ready"]
        for i in ready:
            self.channels[i].send(("abort",) if failed else ("go",))
        results = [self._recv(i, seconds + CHILD_TIMEOUT_S) for i in ready]
        if failed:
            raise RuntimeError(f"a client process could not run: {failed[0]}")
        results = [r[1] for r in results]
        latencies = array("d")
        for r in results:
            latencies.frombytes(r["latencies"])
        ok = sum(r["ok"] for r in results)
        return {"images": ok * images_per_request, "requests": ok, "latencies": latencies.tolist(),
                "errors": sum(r["errors"] + r["warm_errors"] for r in results),  # warm-ups too
                "served_requests": sum(r["served"] for r in results),
                "wall_s": max(r["end"] for r in results) - min(r["start"] for r in results)}

    def _recv(self, i: int, timeout: float):
        try:
            return self.channels[i].recv(timeout)
        except EOFError:
            raise RuntimeError(f"client process {self.procs[i].pid} exited (its error is on "
                               f"stderr above)") from None

    def close(self) -> None:
        """End the client processes: idle ones leave at once on their stdin's end; one still
        measuring (the bench interrupted) is killed after a moment."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- the servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup() -> Callable[[], None] | None:
    """What a server's child process runs before exec (Linux): SIGTERM when the bench dies, even
    by SIGKILL, so that no server is left holding the port or the GPU; and Ctrl-C's default
    action back, which a shell's background job inherits as ignored (the servers are stopped
    with it). The C functions are looked up here, in the parent: the child, forked from a
    threaded process, only calls them."""
    if sys.platform != "linux":
        return None
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl, reset = libc.prctl, libc.signal
    except (OSError, AttributeError):
        return None
    reset.argtypes, reset.restype = [ctypes.c_int, ctypes.c_void_p], ctypes.c_void_p

    def setup() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        reset(int(signal.SIGINT), None)  # SIG_DFL

    return setup


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server in a session of its own (stopping it reaches its worker processes too)."""
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_child_setup())  # noqa: PLW1509


def start_server(data_dir: Path, version_dir: Path, port: int, log: Path, *, device: str = "cpu",
                 batch: int, wait_ms: float, threads: int | None = None, dtype: str | None = None,
                 api_workers: int | None = None, queue_max: int | None = None,
                 tune_malloc: bool | None = None) -> subprocess.Popen:
    """``zscl serve`` on ``port``, serving ``version_dir``; the product's defaults for whatever
    is None."""
    env = {**os.environ, "ZSCL_DATA_DIR": str(data_dir), "ZSCL_MODEL": str(version_dir),
           "ZSCL_PORT": str(port), "ZSCL_DEVICE": device, "ZSCL_BATCH_MAX_SIZE": str(batch),
           "ZSCL_BATCH_MAX_WAIT_MS": str(wait_ms),
           # no update jobs here: the embedded worker's start (~3 s of CPU after /readyz) would
           # land on the first measurements
           "ZSCL_START_WORKER": "false"}
    for name, value in (("ZSCL_TORCH_THREADS", threads), ("ZSCL_INFERENCE_DTYPE", dtype),
                        ("ZSCL_API_WORKERS", api_workers), ("ZSCL_QUEUE_MAX", queue_max),
                        ("ZSCL_TUNE_MALLOC", None if tune_malloc is None else str(tune_malloc).lower())):
        if value is not None:
            env[name] = str(value)
    for name in ("ZSCL_REDIS_URL", "ZSCL_INFERENCE_KEY"):
        env.pop(name, None)
    return _spawn([sys.executable, "-m", "zscl_cli", "serve", "--log-level", "warning"], env, log)


def start_litserve(version_dir: Path, port: int, log: Path, *, device: str, dtype: str, batch: int,
                   wait_ms: float, threads: int | None, workers: int, fast_queue: bool,
                   stats_dir: Path, tune_malloc: bool) -> subprocess.Popen:
    """The LitServe peer (``benchmarks.litserve_peer``)."""
    command = [sys.executable, "-m", "benchmarks.litserve_peer", str(version_dir), "--port", str(port),
               "--device", device, "--dtype", dtype, "--batch", str(batch), "--wait-ms", str(wait_ms),
               "--workers", str(workers), "--stats-dir", str(stats_dir)]
    if threads:
        command += ["--threads", str(threads)]
    if fast_queue:
        command.append("--fast-queue")
    return _spawn(command, {**os.environ, "ZSCL_TUNE_MALLOC": str(tune_malloc).lower()}, log)


def stop_server(proc: subprocess.Popen, *, group: bool = False, timeout_s: float = 30) -> None:
    """Ctrl-C, as a user would; kill it (its process group with ``group``: a server started in
    a session of its own) if it has not stopped within ``timeout_s``."""
    stop_servers([proc], group=group, timeout_s=timeout_s)


def stop_servers(procs: list[subprocess.Popen], *, group: bool = True, timeout_s: float = 30) -> None:
    """:func:`stop_server` for several at once: all are signalled, then waited for; with
    ``group``, whatever their sessions still hold afterwards (a worker process that outlived its
    parent) is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if not group:
                proc.kill()
        if group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300,
               path: str = "/readyz", consecutive: int = 1) -> None:
    """Until ``path`` answers 200 ``consecutive`` times in a row, each on a new connection (with
    several HTTP processes, a new connection may reach any of them)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            streak = streak + 1 if httpx.get(f"{url}{path}", timeout=2).status_code == 200 else 0
        except httpx.HTTPError:
            streak = 0
        if streak >= consecutive:
            return
        time.sleep(0.05 if streak else 0.2)
    raise SystemExit(f"the server did not become ready within {timeout_s:.0f} s; its log: {log}")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def minor_faults(pid: int) -> int | None:
    """The page faults a process and its descendants have taken without disk I/O (Linux:
    /proc/PID/stat, minflt), or None."""
    own = _proc_stat(pid)
    if own is None:
        return None
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))  # ppid, 4th field
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        fields = _proc_stat(current)
        total += int(fields[7]) if fields else 0  # minflt, the 10th field of stat(5)
        todo.extend(children.get(current, []))
    return total


def service_batches(url: str) -> tuple[float, float] | None:
    """(forwards, images forwarded) so far, from the service's /metrics, or None."""
    import httpx

    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    found = dict(re.findall(r"^zscl_inference_batch_images_(count|sum) (\S+)$", text, re.MULTILINE))
    return (float(found["count"]), float(found["sum"])) if len(found) == 2 else None


def litserve_batches(stats_dir: Path) -> tuple[float, float]:
    """(forwards, images forwarded) so far, summed over the peer's inference workers' files."""
    forwards = images = 0.0
    for path in stats_dir.iterdir():
        for _ in range(3):  # a file caught mid-write reads short: read it again
            fields = path.read_text().split()
            if len(fields) == 2:
                forwards, images = forwards + float(fields[0]), images + float(fields[1])
                break
    return forwards, images


# -- the raw forward --------------------------------------------------------------------------

def _dtype_argument(function: Callable, dtype: str):
    """``dtype`` as ``function``'s ``dtype`` parameter takes it: a name, or a torch.dtype where
    its annotation names only that."""
    import torch

    annotation = str(inspect.signature(function).parameters["dtype"].annotation)
    return getattr(torch, dtype) if "torch.dtype" in annotation and "str" not in annotation else dtype


def load_raw(version_dir: Path, device: str, dtype: str, trace_images: bool):
    """The version as the service loads it, at the served precision where ``load_served`` takes
    one (before it did, the service served float32 too)."""
    from service.serving import load_served

    kwargs = {"trace_images": trace_images}
    if "dtype" in inspect.signature(load_served).parameters:
        kwargs["dtype"] = _dtype_argument(load_served, dtype)
    return load_served(version_dir, version_dir.name, 1, device, **kwargs)


def service_forward(served) -> Callable:
    """The service's inference thread's path from a batch of pixels to features: on CUDA the
    pixels staged in pinned memory and the features copied back to the host, once per batch
    (``service.batching.to_device``/``to_host``, where this version of the service has them)."""
    from service import batching

    if hasattr(batching, "to_device") and hasattr(batching, "to_host"):
        return lambda pixels: batching.to_host(served.encode_images(batching.to_device([pixels], served.device)))
    return served.encode_images


def _tower_dtype(served) -> str:
    """The precision the image tower holds its weights in, e.g. 'bfloat16'."""
    tower = getattr(served.model, "visual", served.model)
    return str(next(tower.parameters()).dtype).removeprefix("torch.")


def raw_forward(served, pixels, head, seconds: float) -> dict:
    """The in-process batched forward + ranking with a cached head, for ``seconds``: one
    measurement part, each batch's time as its latency.

    It runs on a thread of its own, as the service's forward runs on its inference thread
    (where the process is left at glibc's malloc defaults, see ``records.runtime``, the main
    thread's heap made the same forward ~35% slower than a thread's here). On CUDA every batch
    ends with a synchronisation: its time is the device's, not the launch's."""
    import torch

    from service.batching import rank  # the service's own ranking

    cuda = str(served.device).startswith("cuda")
    forward = service_forward(served)

    def step():
        rank(served, forward(pixels), head, 3)
        if cuda:
            torch.cuda.synchronize(served.device)

    def measure() -> dict:
        for _ in range(3 if cuda else 1):  # CUDA: kernels chosen and memory pooled first
            step()
        times: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(times) < 3:
            begun = time.perf_counter()
            step()
            times.append(time.perf_counter() - begun)
        return {"images": len(times) * len(pixels), "requests": len(times), "latencies": times,
                "wall_s": time.perf_counter() - started, "errors": 0,
                "batches": (len(times), len(times) * len(pixels))}

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-forward") as pool:
        return pool.submit(measure).result()


# -- the run ----------------------------------------------------------------------------------

def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (default) or 'small' (built-in, random weights), 'starter', an "
                             "open_clip architecture such as ViT-B-16 (random weights unless "
                             "--pretrained), a config JSON or a version dir")
    parser.add_argument("--pretrained", help="with an open_clip name: a tag or checkpoint path")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: the service's "
                        "ZSCL_DEVICE, the raw forward's and LitServe's device")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="served precision, every side (auto: the product's default for the device)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 32],
                        help="open connections, comma-separated (default 1,8,32)")
    parser.add_argument("--images-per-request", type=_ints, default=[1],
                        help="images per multipart request, comma-separated (default 1; at most "
                             "the service's ZSCL_MAX_BATCH_IMAGES, 64)")
    parser.add_argument("--images", type=Path, help="a folder tree of .jpg files to send (e.g. "
                        "cifar10/test); default: generated JPEGs of the model's image size")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="measuring time per system and (request size, concurrency), split "
                             "over the rounds (default 6)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each measurement is split into this many rounds, the servers and the "
                             "raw forward taking turns")
    parser.add_argument("--client-procs", type=int, help="load-generating processes (default: 1 "
                        "on CPU, max(1, min(8, cores // 2)) on CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads, every side (default: 1 on CPU, "
                        "for steady figures on a shared machine; on CUDA the service's own "
                        "default, LitServe's workers cores // workers, the raw forward torch's)")
    parser.add_argument("--batch", type=int, help="images per forward, every side, and the raw "
                        "batch (default: the service's default for the device: 8 CPU, 128 GPU)")
    parser.add_argument("--wait-ms", type=float, default=5.0,
                        help="the servers' batch wait (the service's batch_max_wait_ms, "
                             "LitServe's batch_timeout)")
    parser.add_argument("--api-workers", type=int, help="the service's HTTP processes "
                        "(ZSCL_API_WORKERS; default: the product's default for the device)")
    parser.add_argument("--no-litserve", dest="litserve", action="store_false",
                        help="skip the LitServe peer")
    parser.add_argument("--litserve-workers", type=int, help="LitServe's workers_per_device "
                        "(default: 1 on CPU, max(2, service HTTP processes // 2) on CUDA)")
    parser.add_argument("--no-tune-malloc", dest="tune_malloc", action="store_false", default=None,
                        help="leave glibc's malloc at its defaults on every side (the service "
                             "keeps freed memory by default, records.runtime)")
    parser.add_argument("--big-labels", type=int, default=1000,
                        help="labels of the head-cache miss request (0: skip it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


def resolve(args: argparse.Namespace) -> dict:
    """Every setting of the run, the product's defaults for the device filled in."""
    from records.settings import Settings

    cuda = args.device.startswith("cuda")
    chosen = {"inference_dtype": None if args.dtype == "auto" else args.dtype,
              "api_workers": args.api_workers, "batch_max_size": args.batch}
    # what the flags leave out comes from the environment (ZSCL_*) or the product's defaults
    settings = Settings(device=args.device, **{k: v for k, v in chosen.items() if v is not None})
    if max(args.images_per_request) > settings.max_batch_images:
        raise SystemExit(f"--images-per-request {max(args.images_per_request)} is over the service's "
                         f"limit of {settings.max_batch_images} (ZSCL_MAX_BATCH_IMAGES)")
    cores = os.cpu_count() or 2
    api_processes = getattr(settings, "api_processes", 1)
    threads = args.threads if args.threads or cuda else 1
    workers = args.litserve_workers or (max(2, api_processes // 2) if cuda else 1)
    return {"model": args.model, "device": args.device, "served_dtype": settings.served_dtype,
            "batch": settings.max_batch, "wait_ms": args.wait_ms, "api_processes": api_processes,
            "threads": threads,
            "client_procs": args.client_procs or (max(1, min(8, cores // 2)) if cuda else 1),
            "tune_malloc": settings.tune_malloc if args.tune_malloc is None else args.tune_malloc,
            "trace_images": settings.trace_images,
            "queue_max": max(settings.queue_max, max(args.concurrency) * max(args.images_per_request)),
            "litserve": args.litserve, "litserve_workers": workers,
            # the cores shared out between its workers, as `zscl serve` shares them between its
            # HTTP processes
            "litserve_threads": threads or max(1, cores // workers),
            "litserve_fast_queue": cuda and _has_module("zmq"),
            "concurrency": args.concurrency, "images_per_request": args.images_per_request,
            "seconds": args.seconds, "rounds": args.rounds, "cpus": cores}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def materialise(model: str, pretrained: str | None, data_dir: Path) -> Path:
    """The version directory the service will serve (a preset written as a config JSON first)."""
    from records.settings import Settings
    from service.bootstrap import materialise_model

    if model in PRESETS:
        config = data_dir.parent / f"{model}-clip.json"
        config.write_text(json.dumps(PRESETS[model]))
        model = str(config)
    settings = Settings(data_dir=data_dir, model=model, pretrained=pretrained)
    settings.ensure_dirs()
    return materialise_model(settings)


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


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (a time limit's kill) unwinds like Ctrl-C, so that the servers are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(f"serve_bench stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


class Servers:
    """The service and (optionally) the LitServe peer, started together, each on a free port."""

    def __init__(self, plan: dict, data_dir: Path, version_dir: Path, tmp: Path):
        self.logs = {"service": tmp / "service.log", "litserve": tmp / "litserve.log"}
        self.stats_dir = tmp / "litserve-stats"
        self.stats_dir.mkdir()
        self.ports = {"service": free_port()}
        self.procs = {"service": start_server(
            data_dir, version_dir, self.ports["service"], self.logs["service"], device=plan["device"],
            batch=plan["batch"], wait_ms=plan["wait_ms"], threads=plan["threads"],
            dtype=plan["served_dtype"], api_workers=plan["api_processes"],
            queue_max=plan["queue_max"], tune_malloc=plan["tune_malloc"])}
        if plan["litserve"]:
            self.ports["litserve"] = free_port()
            self.procs["litserve"] = start_litserve(
                version_dir, self.ports["litserve"], self.logs["litserve"], device=plan["device"],
                dtype=plan["served_dtype"], batch=plan["batch"], wait_ms=plan["wait_ms"],
                threads=plan["litserve_threads"], workers=plan["litserve_workers"],
                fast_queue=plan["litserve_fast_queue"], stats_dir=self.stats_dir,
                tune_malloc=plan["tune_malloc"])
        self.api_processes = plan["api_processes"]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_ready(self) -> None:
        wait_ready(self.url("service"), self.procs["service"], self.logs["service"],
                   consecutive=1 if self.api_processes == 1 else 3 * self.api_processes)
        if "litserve" in self.procs:
            wait_ready(self.url("litserve"), self.procs["litserve"], self.logs["litserve"], path="/health")

    def batches(self, name: str) -> tuple[float, float] | None:
        return service_batches(self.url(name)) if name == "service" else litserve_batches(self.stats_dir)

    def stop(self) -> None:
        stop_servers(list(self.procs.values()))


def http_measurer(pool: ClientPool, servers: Servers, name: str, images: list[bytes]
                  ) -> Callable[[int, int, float], dict]:
    """``measure(images_per_request, concurrency, seconds)``: one part against server ``name``,
    with its forwards (the service's only where its /metrics saw every image, i.e. every HTTP
    process) and, for the service, its processes' page faults."""
    port, proc = servers.ports[name], servers.procs[name]
    sets: dict[int, list[bytes]] = {}

    def measure(size: int, concurrency: int, seconds: float) -> dict:
        if size not in sets:
            sets[size] = request_set(f"127.0.0.1:{port}", images, size)
        faults = minor_faults(proc.pid) if name == "service" else None
        before = servers.batches(name)
        part = pool.measure("127.0.0.1", port, f"{name}-{size}", sets[size], concurrency, seconds, size)
        after = servers.batches(name)
        if faults is not None and (now := minor_faults(proc.pid)) is not None:
            part["faults"] = now - faults
        if before is not None and after is not None:
            forwards, forwarded = after[0] - before[0], after[1] - before[1]
            if name != "service" or forwarded == part["served_requests"] * size:
                part["batches"] = (forwards, forwarded)
        return part

    return measure


def measure_all(measurers: dict[str, Callable[[int, int, float], dict]],
                ceiling: Callable[[int, float], dict], plan: dict, timings: dict[str, float]) -> list[dict]:
    """Every measurer at every (request size, concurrency), side by side: each measurement is
    split into rounds that take the measurers in turn (the order rotating), so that a change in
    the machine's load falls on all of them alike; the client's ceiling once per concurrency."""
    round_s = plan["seconds"] / plan["rounds"]
    ceilings: dict[int, dict] = {}
    results = []
    for size in plan["images_per_request"]:
        for c in plan["concurrency"]:
            name = f"measure: {size} image(s) per request, concurrency {c}"
            with timed(timings, name):
                if c not in ceilings:
                    ceilings[c] = summarise([ceiling(c, round_s)], 1)
                parts: dict[str, list[dict]] = {m: [] for m in measurers}
                order = list(measurers)
                for r in range(plan["rounds"]):
                    for m in order[r % len(order):] + order[:r % len(order)]:
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


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark with command-line arguments ``argv``; every figure as plain data.

    Returns:
        ``config``: the resolved settings (model, device, device_name, image_size, served_dtype,
        raw_dtype, batch, wait_ms, api_processes, client_procs, litserve_workers, ...);
        ``levels``: one dict per (request size, concurrency) with ``images_per_request``,
        ``concurrency``, the rows ``service``, ``raw`` and ``litserve`` (absent with
        --no-litserve), each with ``img_s``, ``req_s``, ``p50_ms``, ``p99_ms``, ``mean_batch``,
        ``errors``, ``images``, ``requests``, ``wall_s``, ``faults_per_image`` (None where
        unknown; the raw row's requests are batches, its latency a batch's time),
        ``service_over_raw`` and ``service_over_litserve`` (img/s ratios), ``client_ceiling``
        (the same row for ``/livez``) and ``client_ceiling_rps`` (its requests/s);
        ``big_labels``: ``labels``, ``miss_ms``, ``hit_ms`` (or None); ``timings_s``: seconds
        per part of the run.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    import torch

    from records.runtime import tune_process

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}, but torch {torch.__version__} sees no CUDA device")
    plan = resolve(args)
    # the raw forward runs under the service's process settings: an honest ceiling (the
    # caller's torch threads come back after: run may be imported)
    threads = torch.get_num_threads()
    tune_process(torch_threads=plan["threads"], tune_malloc=plan["tune_malloc"])
    timings: dict[str, float] = {}
    try:
        with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="zscl-bench-") as tmp:
            result = _run_in(Path(tmp), args, plan, timings)
    finally:
        torch.set_num_threads(threads)
    result["timings_s"] = timings
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def _run_in(tmp: Path, args: argparse.Namespace, plan: dict, timings: dict[str, float]) -> dict:
    with timed(timings, "model: build and save the version"):
        version_dir = materialise(args.model, args.pretrained, tmp / "data")
    with timed(timings, "start-up: service, LitServe and the raw model"):
        servers = Servers(plan, tmp / "data", version_dir, tmp)
        try:
            served = load_raw(version_dir, plan["device"], plan["served_dtype"], plan["trace_images"])
            servers.wait_ready()
        except BaseException:
            servers.stop()
            raise
    try:
        return _measure(served, servers, args, plan, timings)
    finally:
        with timed(timings, "stop the servers"):
            servers.stop()


def _measure(served, servers: Servers, args: argparse.Namespace, plan: dict,
             timings: dict[str, float]) -> dict:
    import torch
    from PIL import Image

    image_size = served.preprocess(Image.new("RGB", (8, 8))).shape[-1]
    with timed(timings, "inputs: images, raw batch, client processes"):
        images = read_images(args.images) if args.images else synthetic_jpegs(image_size, GENERATED_IMAGES)
        pixels = torch.stack([served.preprocess(Image.open(io.BytesIO(images[i % len(images)])).convert("RGB"))
                              for i in range(plan["batch"])])
        head = served.build_head(LABELS, ["a photo of a {}."])
        pool = ClientPool(plan["client_procs"])
    try:
        measurers = {"service": http_measurer(pool, servers, "service", images),
                     "raw": lambda size, c, seconds: raw_forward(served, pixels, head, seconds)}
        if "litserve" in servers.procs:
            measurers["litserve"] = http_measurer(pool, servers, "litserve", images)
        livez = [get_request(f"127.0.0.1:{servers.ports['service']}", "/livez")]
        levels = measure_all(measurers, lambda c, seconds: pool.measure(
            "127.0.0.1", servers.ports["service"], "livez", livez, c, seconds, 1), plan, timings)
        big = None
        if args.big_labels:
            with timed(timings, f"{args.big_labels}-label request"):
                big = big_label_latency(servers.url("service"), images[0], args.big_labels, repeats=3)
    finally:
        pool.close()
    config = dict(plan, image_size=image_size, images=str(args.images) if args.images else
                  f"{len(images)} generated JPEGs", torch=torch.__version__,
                  raw_dtype=_tower_dtype(served),
                  device_name=(torch.cuda.get_device_name(plan["device"])
                               if plan["device"].startswith("cuda") else "cpu"))
    return {"config": config, "levels": levels, "big_labels": big}


# -- the report -------------------------------------------------------------------------------

def _num(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width},.{digits}f}"


def format_report(result: dict) -> str:
    """The run as text: a header, one table per (request size, concurrency), the timings."""
    c = result["config"]
    litserve = (f"LitServe: workers_per_device {c['litserve_workers']}, fast_queue "
                f"{c['litserve_fast_queue']}, torch threads {c['litserve_threads']}"
                if c["litserve"] else "LitServe: skipped")
    lines = [(f"model {c['model']} ({c['image_size']} px) on {c['device']} ({c['device_name']}); "
              f"served {c['served_dtype']}, raw forward {c['raw_dtype']}; max batch {c['batch']}, "
              f"wait {c['wait_ms']:g} ms"),
             (f"service: {c['api_processes']} HTTP process(es), queue max {c['queue_max']}; "
              f"torch threads {c['threads'] or 'default'}; {litserve}; malloc tuned {c['tune_malloc']}"),
             (f"client: {c['client_procs']} process(es); images: {c['images']}; {c['seconds']:g} s "
              f"per measurement in {c['rounds']} round(s); {c['cpus']} CPUs; torch {c['torch']}"), ""]
    for group in result["levels"]:
        lines += [*_group_table(group, c["batch"]), ""]
    if result.get("big_labels"):
        big = result["big_labels"]
        lines += [(f"{big['labels']}-label request to the service (1 image, 1 template): head "
                   f"cache miss {big['miss_ms']:.1f} ms, hit {big['hit_ms']:.1f} ms"), ""]
    if result.get("timings_s"):
        lines.append("time taken:")
        lines += [f"  {name:<58}{s:7.1f} s" for name, s in result["timings_s"].items()]
        lines.append(f"  {'total':<58}{sum(result['timings_s'].values()):7.1f} s")
    return "\n".join(lines)


_COLUMNS = (("img/s", 10), ("req/s", 10), ("p50 ms", 9), ("p99 ms", 9), ("mean batch", 12),
            ("faults/img", 12), ("errors", 8))


def _group_table(group: dict, batch: int) -> list[str]:
    ceiling = group["client_ceiling"]
    title = (f"{group['images_per_request']} image(s) per request, concurrency {group['concurrency']}; "
             f"client ceiling {group['client_ceiling_rps']:,.0f} req/s on /livez "
             f"(p50 {_num(ceiling['p50_ms'], 0, 2)} ms, errors {ceiling['errors']})")
    lines = [title, "  " + " " * 24 + "".join(f"{name:>{width}}" for name, width in _COLUMNS)]
    names = {"service": "service /v1/classify", "raw": f"raw forward, batch {batch}",
             "litserve": "LitServe /v1/classify"}
    for name, label in names.items():
        row = group.get(name)
        if row is None:
            continue
        values = (row["img_s"], None if name == "raw" else row["req_s"], row["p50_ms"],
                  row["p99_ms"], row["mean_batch"], row["faults_per_image"])
        cells = "".join(_num(v, w, 0 if head == "faults/img" else 1)
                        for v, (head, w) in zip(values, _COLUMNS))
        lines.append(f"  {label:<24}{cells}{row['errors']:8d}")
    ratios = "   ".join(f"service/{peer} {group[key]:.2f}" for peer, key in (
        ("raw", "service_over_raw"), ("LitServe", "service_over_litserve")) if group[key] is not None)
    used = group["service"]["req_s"] / ceiling["req_s"] * 100 if ceiling["req_s"] else None
    lines.append(f"  ratios (img/s): {ratios};   service req/s = {_num(used, 0, 0)}% of the client ceiling")
    return lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="  .. %(message)s")
    logger.setLevel(logging.INFO)
    result = run(argv)
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

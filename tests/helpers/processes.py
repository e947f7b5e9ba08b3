"""Real processes for the tests: free ports, polling, redis-server, and a stack of `zscl serve`
API processes and `zscl worker` Celery workers sharing one data dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.helpers import ADMIN

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, step_s: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"{what} not met within {timeout_s}s")


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server (no persistence) on a free port, answering; yields the port."""
    import redis

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), 10, what="redis-server answering")
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Stack:
    """API and worker processes sharing one data dir; everything is killed at the end."""

    def __init__(self, data_dir: Path, env: dict[str, str], logs: Path):
        self.data_dir, self.env, self.logs = data_dir, env, logs
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], name: str, extra_env: dict[str, str] | None = None):
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "zscl_cli", *args], cwd=REPO,
                                env={**self.env, **(extra_env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def api(self, **extra_env):
        proc = self._spawn(["serve", "--port", str(self.port), "--log-level", "warning"], "api",
                           extra_env)
        wait_until(lambda: self._ready(), 120, 0.25, "API ready")
        return proc

    def worker(self, name: str = "w1"):
        return self._spawn(["worker", "--hostname", f"{name}@%h", "--log-level", "INFO"], name)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def served(self) -> str:
        return httpx.get(f"{self.url}/livez", timeout=5).headers["X-Model-Version"]

    def get_job(self, job_id: str) -> dict:
        return httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json()

    def upload(self, body: bytes, name: str, suite: bool = False) -> dict:
        response = httpx.post(f"{self.url}/v1/datasets", content=body, timeout=60,
                              params={"name": name, "suite": str(suite).lower(), "test_fraction": 0.25},
                              headers={**ADMIN, "Content-Type": "application/zip"})
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, dataset_id: str, **body) -> dict:
        response = httpx.post(f"{self.url}/v1/jobs", json={"dataset_id": dataset_id, **body},
                              headers=ADMIN, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_job(self, job_id: str, timeout_s: float = 300) -> dict:
        return wait_until(lambda: (j := self.get_job(job_id))["state"] in
                          ("succeeded", "rejected", "failed", "cancelled") and j,
                          timeout_s, 0.5, f"job {job_id} ending")

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def session_processes(session_id: int) -> list[int]:
    """The live (not zombie) processes of session ``session_id`` (Linux ``/proc``): for a
    process started with ``start_new_session=True``, itself and every descendant, even one
    whose parent died and left it to init."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        state, _ppid, _pgrp, session = text[text.rindex(")") + 2:].split()[:4]
        if int(session) == session_id and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_session(session_id: int) -> None:
    """SIGKILL whatever is left of session ``session_id`` (see :func:`session_processes`): the
    clean-up of a test whose process may have died before stopping its own children."""
    for pid in session_processes(session_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

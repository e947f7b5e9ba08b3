"""Real processes: redis-server, `zscl serve` API processes and `zscl worker` Celery workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.worker.conftest import write_reference_dir
from zscl_core import save_version

REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-key-for-e2e-tests"
ADMIN = {"X-API-Key": ADMIN_KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, step_s: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"{what} not met within {timeout_s}s")


@pytest.fixture()
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed; .ci/run installs it (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis
        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), 10, what="redis-server answering")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


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


@pytest.fixture()
def stack_factory(tmp_path, pretrained_tiny):
    """Builds a Stack over a data dir whose served model is the colour-pretrained tiny CLIP."""
    loaded, _ = pretrained_tiny
    stacks = []

    def make(broker_url: str | None = None, redis: str | None = None, **env) -> Stack:
        data_dir = tmp_path / "var"
        save_version(data_dir / "versions", loaded.model, loaded.spec, version_id="v-tiny",
                     metadata={"source": "tiny colours"})
        base = {k: v for k, v in os.environ.items() if not k.startswith("ZSCL_")}
        base.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_MODEL": str(data_dir / "versions" / "v-tiny"),
                     "ZSCL_ADMIN_KEY": ADMIN_KEY, "ZSCL_TORCH_THREADS": "1",
                     "ZSCL_RECONCILE_INTERVAL_S": "0.5", "ZSCL_JOB_HEARTBEAT_TIMEOUT_S": "6",
                     "ZSCL_REFERENCE_DIR": str(write_reference_dir(tmp_path / "reference")),
                     "ZSCL_START_WORKER": "false"})
        if redis:
            base.update({"ZSCL_REDIS_URL": redis, "ZSCL_BROKER_URL": redis})
        if broker_url:
            base["ZSCL_BROKER_URL"] = broker_url
        base.update(env)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        stack = Stack(data_dir, base, logs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()

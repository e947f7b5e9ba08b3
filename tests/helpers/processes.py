"""Real processes for the tests: free ports, polling, redis-server, and a stack of `zscl serve`
API processes and `zscl worker` Celery workers sharing one data dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from records.tables import TERMINAL_STATES
from tests.helpers import ADMIN

REPO = Path(__file__).resolve().parents[2]
# A loaded machine (other engineers' work, two workers training) may take many times the usual,
# and a deadline costs nothing until it is hit: every one here is far past what a healthy run
# takes, so that a test fails on a hang, never on a slow machine. A timing that is the point of
# a test (a limit the server enforces, a latency it promises) is that test's own constant.
#
# `zscl serve` stops in GRACEFUL_SHUTDOWN_S (5 s) plus its worker's warm shutdown (at most 15 s)
STOP_DEADLINE_S = 90
# one request to a test server (a job record answers in milliseconds; an upload ingests)
REQUEST_TIMEOUT_S = 120
# a server starting, or catching up: serving a version another process promoted or activated,
# summing its processes' metrics, reaping a lost worker's job
START_DEADLINE_S = 300
# a job is waited for as long as it moves (state, step, losses, report), and so is other work
# that shows its progress (head builds ending one by one): it fails only after this long
# without any change, however long the whole takes
JOB_STALL_S = 300
# a running job whose worker has not beaten for this long is taken for lost
# (ZSCL_JOB_HEARTBEAT_TIMEOUT_S, the service's default): a live worker beats every 2 s, but a
# loaded machine delays a beat (CPU; SQLite's write lock, waited for up to 10 s), and a live
# worker taken for lost fails its job. A test that kills a worker waits this long, and up to a
# quarter more (the reaper's interval), for the job to be reaped: well within JOB_STALL_S
HEARTBEAT_TIMEOUT_S = 60


# a GET of a job record that has not answered in this long has the API's threads noted
# (Stack.get_job); it still waits up to REQUEST_TIMEOUT_S
SLOW_ANSWER_S = 5


def _read(path) -> str:
    """A /proc file's text, stripped; '' where it is gone or unreadable."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _stat_fields(path) -> list[str]:
    """The fields of a /proc ``stat`` file after the command name (state first), or [] where
    the process or thread is gone."""
    text = _read(path)
    return text[text.rindex(")") + 2:].split() if ")" in text else []


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


def wait_progressing(poll, stall_s: float, step_s: float = 0.5, what: str = "condition"):
    """Call ``poll()`` until the first of the two things it returns, the value waited for, is
    truthy, and return that. The second is a snapshot of what is being waited for (a job's
    record, say): the wait has no deadline as a whole, and fails only when that snapshot has
    stayed the same for ``stall_s``."""
    last, moved_at = object(), time.monotonic()
    while True:
        value, now = poll()
        if value:
            return value
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > stall_s:
            raise AssertionError(f"{what}: no progress for {stall_s}s; last seen: {last!r}")
        time.sleep(step_s)


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
        wait_until(lambda: _pings(client), START_DEADLINE_S, what="redis-server answering")
        client.close()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Stack:
    """API and worker processes sharing one data dir; everything is killed at the end."""

    def __init__(self, data_dir: Path, env: dict[str, str], logs: Path):
        self.data_dir, self.env, self.logs = data_dir, env, logs
        self.procs: list[subprocess.Popen] = []
        self.api_pids: list[int] = []
        self.slow_answers: list[str] = []  # see get_job
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], name: str, extra_env: dict[str, str] | None = None,
               stdout=None):
        """``zscl *args``, its output to ``stdout`` (default: the file ``<name>.log``)."""
        out = (self.logs / f"{name}.log").open("w") if stdout is None else stdout
        proc = subprocess.Popen([sys.executable, "-m", "zscl_cli", *args], cwd=REPO,
                                env={**self.env, **(extra_env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def api(self, log_level: str = "warning", stdout=None, **extra_env):
        proc = self._spawn(["serve", "--port", str(self.port), "--log-level", log_level], "api",
                           extra_env, stdout)
        self.api_pids.append(proc.pid)
        # with several API processes, each loads its model: ready once every one has said so
        # (one ready process let a test's next request reach another still loading: a 503)
        processes = int({**self.env, **extra_env}.get("ZSCL_API_WORKERS", "1"))
        ready: set[str] = set()
        wait_until(lambda: proc.poll() is not None or self._ready(ready) >= processes,
                   START_DEADLINE_S, 0.25, "API ready")
        assert proc.poll() is None, f"zscl serve exited with {proc.returncode} before it was ready"
        return proc

    def worker(self, name: str = "w1"):
        return self._spawn(["worker", "--hostname", f"{name}@%h", "--log-level", "INFO"], name)

    def _ready(self, ready: set[str]) -> int:
        """Ask ``/readyz`` once (a new connection: any API process may answer), note the
        process that answered ready in ``ready``; how many have."""
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=REQUEST_TIMEOUT_S)
        except httpx.HTTPError:
            return len(ready)
        if response.status_code == 200:
            ready.add(response.headers.get("X-Process-Id", "?"))
        return len(ready)

    def served(self) -> str:
        return httpx.get(f"{self.url}/livez", timeout=REQUEST_TIMEOUT_S).headers["X-Model-Version"]

    def get_job(self, job_id: str) -> dict:
        # a job record answers in milliseconds: if it has not in SLOW_ANSWER_S, what the API's
        # threads are doing is noted (issue 20, item 13: one took over 10 s once, cause unseen)
        watch = threading.Timer(SLOW_ANSWER_S, self._note_slow_answer, (f"GET /v1/jobs/{job_id}",))
        watch.start()
        try:
            return httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=REQUEST_TIMEOUT_S).json()
        finally:
            watch.cancel()

    def _note_slow_answer(self, what: str) -> None:
        """The API processes' threads as the kernel sees them (name, state, where each waits),
        the load average and the CPU and I/O pressure, while ``what`` is still unanswered:
        printed with the test's output, it tells a loop or lock wait, a wait in the kernel (a
        disk, a pipe) and a starved machine apart."""
        lines = [(f"{what} unanswered after {SLOW_ANSWER_S} s; load average "
                  f"{_read('/proc/loadavg')}; pressure: cpu {_read('/proc/pressure/cpu')}; "
                  f"io {_read('/proc/pressure/io')}")]
        for api in self.api_pids:  # `zscl serve` and every process it started (API processes)
            for pid in session_processes(api):
                for task in sorted(Path(f"/proc/{pid}/task").glob("[0-9]*")):
                    state = (_stat_fields(task / "stat") or ["?"])[0]
                    lines.append(f"  process {pid} (of zscl serve {api}) thread {task.name} "
                                 f"{_read(task / 'comm')!r}: state {state}, waiting in "
                                 f"{_read(task / 'wchan') or '-'}")
        self.slow_answers.append("\n".join(lines))

    def upload(self, body: bytes, name: str, suite: bool = False) -> dict:
        response = httpx.post(f"{self.url}/v1/datasets", content=body, timeout=REQUEST_TIMEOUT_S,
                              params={"name": name, "suite": str(suite).lower(), "test_fraction": 0.25},
                              headers={**ADMIN, "Content-Type": "application/zip"})
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, dataset_id: str, **body) -> dict:
        response = httpx.post(f"{self.url}/v1/jobs", json={"dataset_id": dataset_id, **body},
                              headers=ADMIN, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_job(self, job_id: str, until=None, *, step_s: float = 0.5,
                 stall_s: float = JOB_STALL_S) -> dict:
        """The job's record once ``until(record)`` holds (default: once the job ended). It
        waits as long as the record changes (:func:`wait_progressing`); a job that ends
        without ``until`` holding fails at once."""
        what = f"job {job_id} {'ending' if until is None else 'reaching the awaited point'}"

        def poll() -> tuple[dict | None, dict]:
            job = self.get_job(job_id)
            ended = job["state"] in TERMINAL_STATES
            if until is None:
                return (job if ended else None), job
            if until(job):
                return job, job
            assert not ended, f"{what}: it ended first: {job}"
            return None, job

        return wait_progressing(poll, stall_s, step_s, what)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))

    def stalls(self) -> list[str]:
        """What the API processes logged of their event loop's stalls (service.loop_watch): shown
        with a failed test, it says whether a slow answer waited on the loop or on the machine."""
        found: list[list[str]] = []
        for path in self.logs.glob("api*.log"):
            in_report = False
            for line in path.read_text().splitlines():
                if "event loop stalled" in line:
                    found.append([line])
                    in_report = True
                elif in_report and line.startswith("  "):  # the stack under it
                    found[-1].append(line)
                else:
                    in_report = False
        return ["\n".join(lines) for lines in found]

    def close(self) -> None:
        """Stop every process, and everything each one started: SIGTERM to each (`zscl serve`
        stops its own worker), then wait for each one's whole session to end, orphans included,
        and SIGKILL whatever is left at :data:`STOP_DEADLINE_S`. Waiting for the started process
        alone let a worker's pool or DataLoader processes live on after the test."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            else:  # it died (a test killed it): what it left has no one to stop it
                signal_session(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        for proc in self.procs:
            while session_processes(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            kill_session(proc.pid)
            proc.wait()
            wait_until(lambda sid=proc.pid: not session_processes(sid), STOP_DEADLINE_S, 0.1,
                       f"the processes of session {proc.pid} gone after SIGKILL")


def session_processes(session_id: int) -> list[int]:
    """The live (not zombie) processes of session ``session_id`` (Linux ``/proc``): for a
    process started with ``start_new_session=True``, itself and every descendant, even one
    whose parent died and left it to init."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if not fields:  # it ended meanwhile
            continue
        state, _ppid, _pgrp, session = fields[:4]
        if int(session) == session_id and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def signal_session(session_id: int, signum: int) -> None:
    """Send ``signum`` to every live process of session ``session_id``."""
    for pid in session_processes(session_id):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def kill_session(session_id: int) -> None:
    """SIGKILL whatever is left of session ``session_id`` (see :func:`session_processes`): the
    clean-up of a test whose process may have died before stopping its own children."""
    signal_session(session_id, signal.SIGKILL)


def marked_processes(name: str, value: str) -> dict[int, dict[str, str]]:
    """The live processes (Linux ``/proc``) whose environment has ``name=value``, but this one:
    pid -> their environment. Every process a test starts inherits the environment it was
    started with, even one whose parent died and left it to init."""
    wanted = f"{name}={value}".encode()
    found = {}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        try:
            entries = environ.read_bytes().split(b"\0")
            state = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # ended meanwhile, or another user's
            continue
        if wanted in entries and pid != os.getpid() and state != "Z":
            found[pid] = dict(e.decode(errors="replace").partition("=")[::2] for e in entries if e)
    return found

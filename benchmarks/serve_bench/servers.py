"""The servers the benchmark starts and stops: ``zscl serve`` and the LitServe peer
(``benchmarks.litserve_peer``), each in a session of its own on a free port, and what the
measurements read from them (readiness, forwards so far, page faults)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # where the servers and client processes run


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


def process_tree(pid: int) -> tuple[int, float] | None:
    """(minor page faults, CPU seconds) a process and its descendants have taken so far (Linux:
    /proc/PID/stat's minflt, utime and stime), or None. Faults are those without disk I/O."""
    stats = {int(entry.name): fields for entry in Path("/proc").iterdir()
             if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None}
    if pid not in stats:
        return None
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)  # ppid, the 4th field of stat(5)
    faults, ticks, todo = 0, 0, [pid]
    while todo:
        fields = stats[current := todo.pop()]  # minflt, utime, stime: stat(5)'s 10th, 14th, 15th
        faults, ticks = faults + int(fields[7]), ticks + int(fields[11]) + int(fields[12])
        todo.extend(children.get(current, []))
    return faults, ticks / os.sysconf("SC_CLK_TCK")


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
        self.pause_idle = plan["pause_idle"]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_ready(self) -> None:
        wait_ready(self.url("service"), self.procs["service"], self.logs["service"],
                   consecutive=1 if self.api_processes == 1 else 3 * self.api_processes)
        if "litserve" in self.procs:
            wait_ready(self.url("litserve"), self.procs["litserve"], self.logs["litserve"], path="/health")

    def batches(self, name: str) -> tuple[float, float] | None:
        return service_batches(self.url(name)) if name == "service" else litserve_batches(self.stats_dir)

    @contextlib.contextmanager
    def only(self, name: str) -> Iterator[None]:
        """Only server ``name`` runs meanwhile (another name, such as "raw": neither): the other's
        session is stopped (SIGSTOP) and continued afterwards. An idle server is not quiet (the
        LitServe peer's idle processes took about 0.1 core of polling on 2 CPU cores), and its
        wake-ups land on whichever core is free: during the raw forward the second core is, so
        they cost it nothing; during the service's turn the service's HTTP thread holds it, so
        they preempt its forward. Pausing the idle one measures each system alone.
        ``pause_idle`` False (``--no-pause``) leaves them all running."""
        paused = [proc for other, proc in self.procs.items()
                  if other != name and proc.poll() is None] if self.pause_idle else []
        for proc in paused:
            _signal_group(proc, signal.SIGSTOP)
        try:
            yield
        finally:
            for proc in paused:
                _signal_group(proc, signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():  # a stopped server would not act on the Ctrl-C
            _signal_group(proc, signal.SIGCONT)
        stop_servers(list(self.procs.values()))


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """``signum`` to a server's session (its worker processes too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)

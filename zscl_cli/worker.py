"""``zscl worker``: a Celery worker for update jobs; and the one `zscl serve` starts beside the
API in embedded mode.

The embedded worker never outlives its `zscl serve`: it runs in a process group of its own, so
that stopping it reaches its pool process and their DataLoader processes too (a warm shutdown,
then SIGKILL to the group); and it watches its parent, so that it stops by itself when `zscl
serve` is killed with no chance to stop it. A worker left by an earlier run is reported at start.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["add_worker", "embedded_worker"]

logger = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5   # how soon an embedded worker notices that its `zscl serve` is gone
STOP_GRACE_S = 15      # a warm shutdown (a job in progress may finish) before the group is killed
ORPHAN_GRACE_S = 10    # an orphaned worker's cold shutdown, before it kills its own group
PID_FILE = "embedded-worker.pid"  # in the data dir, while `zscl serve` runs its worker


# -- worker ----------------------------------------------------------------------------------

def cmd_worker(args) -> int:
    """``zscl worker``: run a Celery worker that takes update jobs one at a time, until stopped."""
    from jobqueue import QUEUE
    from worker.app import app

    argv = ["worker", f"--loglevel={args.log_level}", "--concurrency", "1", "--pool", args.pool,
            "--queues", QUEUE, "--without-gossip", "--without-mingle"]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    if args.parent_pid is not None:
        threading.Thread(target=_stop_when_orphaned, args=(args.parent_pid,), daemon=True,
                         name="zscl-parent-watch").start()
    app.worker_main(argv)
    return 0


def _stop_when_orphaned(parent_pid: int) -> None:
    """Wait until this worker's parent is no longer ``parent_pid`` (it died, however: a SIGKILL
    gives it no chance to stop us, and we were handed to init), then stop. Polling ``getppid``
    works on every POSIX system, whichever thread of the parent started us. Celery's pool
    processes die with us (it sets their PR_SET_PDEATHSIG), their DataLoader processes with
    them (torch's watchdog)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    _stop_orphaned(parent_pid)


def _stop_orphaned(parent_pid: int) -> None:
    """Cold shutdown (SIGQUIT: a job in progress stops now, and is retried at the next start);
    if that hangs, SIGKILL to this worker's process group, which `zscl serve` made it lead."""
    logger.warning("zscl serve (pid %d) is gone: stopping this worker", parent_pid)
    os.kill(os.getpid(), signal.SIGQUIT)
    time.sleep(ORPHAN_GRACE_S)
    logger.warning("the cold shutdown did not end this worker in %d s: killing it", ORPHAN_GRACE_S)
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


def add_worker(subparsers) -> None:
    """Register ``zscl worker`` on the ``zscl`` parser."""
    p = subparsers.add_parser("worker", help="run a Celery worker for update jobs (one per GPU)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo"],
                   help="prefork: the job runs in a child process (default)")
    p.add_argument("--hostname", help="Celery node name, e.g. gpu0@%%h")
    p.add_argument("--log-level", default="INFO",
                   help="Celery's log level: DEBUG, INFO (default), WARNING, ERROR or CRITICAL")
    # set by `zscl serve` for its embedded worker: stop once that process is gone
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)


# -- the embedded worker ---------------------------------------------------------------------

@contextlib.contextmanager
def embedded_worker(settings):
    """In embedded mode `zscl serve` runs one worker process beside the API."""
    if settings.distributed or not settings.start_worker:
        yield None
        return
    pid_file = Path(settings.data_dir) / PID_FILE
    _report_leftover(pid_file)
    proc = subprocess.Popen([sys.executable, "-m", "zscl_cli", "worker", "--log-level", "WARNING",
                             "--parent-pid", str(os.getpid())], process_group=0)
    print(f"  worker: pid {proc.pid} (embedded broker {settings.broker_url})", flush=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    try:
        yield proc
    finally:
        _stop(proc)
        pid_file.unlink(missing_ok=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the worker (Celery's warm shutdown: a job in progress may finish), at most
    :data:`STOP_GRACE_S`; then SIGKILL to its process group, so that no pool or DataLoader
    process outlives it (when a worker is killed alone, its pool process is left to init)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("the worker (pid %d) did not stop in %d s: killing it", proc.pid,
                           STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _report_leftover(pid_file: Path) -> None:
    """Say so when the worker of an earlier `zscl serve` still runs (that one was killed before
    it could stop it, and the worker predates its parent watch or has not noticed yet): two
    workers would share the cores and the jobs."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    if _is_zscl_worker(pid):
        logger.warning("the worker of an earlier `zscl serve` is still running (pid %d); it stops "
                       "by itself within seconds now that its parent is gone; if it does not: "
                       "kill %d", pid, pid)
    else:
        logger.info("the previous `zscl serve` did not stop cleanly (its worker, pid %d, is gone)",
                    pid)


def _is_zscl_worker(pid: int) -> bool:
    """Whether ``pid`` is a running ``zscl worker`` (on a system without /proc: any process)."""
    if Path("/proc/self").exists():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # no such process
            return False
        return b"zscl_cli" in argv and b"worker" in argv
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True

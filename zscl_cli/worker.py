"""``zscl worker``: a Celery worker for update jobs; and the one `zscl serve` starts beside the
API in embedded mode."""

from __future__ import annotations

import contextlib
import subprocess
import sys

__all__ = ["add_worker", "embedded_worker"]


# -- worker ----------------------------------------------------------------------------------

def cmd_worker(args) -> int:
    from records.queue import QUEUE
    from worker.app import app

    argv = ["worker", f"--loglevel={args.log_level}", "--concurrency", "1", "--pool", args.pool,
            "--queues", QUEUE, "--without-gossip", "--without-mingle"]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


def add_worker(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run a Celery worker for update jobs (one per GPU)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo"],
                   help="prefork: the job runs in a child process (default)")
    p.add_argument("--hostname", help="Celery node name, e.g. gpu0@%%h")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_worker)


@contextlib.contextmanager
def embedded_worker(settings):
    """In embedded mode `zscl serve` runs one worker process beside the API."""
    if settings.distributed or not settings.start_worker:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-m", "zscl_cli", "worker", "--log-level", "WARNING"])
    print(f"  worker: pid {proc.pid} (embedded broker {settings.broker_url})", flush=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()



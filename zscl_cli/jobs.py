"""``zscl`` subcommands for continual updates: worker, dataset upload/list, job create/watch/cancel.

Registered in :data:`zscl_cli.main.COMMANDS`; HTTP through :mod:`zscl_cli.http`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from . import http

__all__ = ["add_worker", "add_dataset", "add_job", "embedded_worker"]

_TERMINAL = {"succeeded", "rejected", "failed", "cancelled"}
_CONTENT_TYPES = {".zip": "application/zip", ".tar": "application/x-tar",
                  ".gz": "application/gzip", ".tgz": "application/gzip"}


# -- worker ----------------------------------------------------------------------------------

def cmd_worker(args) -> int:
    from worker.app import app
    from records.queue import QUEUE

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


# -- dataset ---------------------------------------------------------------------------------

def cmd_dataset_upload(args) -> int:
    path = Path(args.archive)
    content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    params = {"name": args.name or path.name.split(".")[0], "suite": str(args.suite).lower(),
              "test_fraction": args.test_fraction, "seed": args.seed}
    with path.open("rb") as fh:
        body = http.request("POST", f"{http.base_url(args)}/v1/datasets", content=fh,
                            params=params, headers={**http.admin_headers(args),
                                                    "Content-Type": content_type}).json()
    print(f"dataset {body['id']} '{body['name']}': {len(body['classnames'])} classes, "
          f"{body['n_train']} train / {body['n_test']} test ({body['split']} split)"
          f"{', zero-shot suite' if body['is_suite'] else ''}")
    return 0


def cmd_dataset_list(args) -> int:
    for d in http.request("GET", f"{http.base_url(args)}/v1/datasets").json():
        print(f"{d['id']}  {d['name']:<20} classes={len(d['classnames'])} train={d['n_train']} "
              f"test={d['n_test']} eval={d['n_eval']}{'  [suite]' if d['is_suite'] else ''}")
    return 0


def add_dataset(subparsers) -> None:
    p = subparsers.add_parser("dataset", help="upload or list labelled datasets")
    sub = p.add_subparsers(dest="dataset_command", required=True)
    up = sub.add_parser("upload", help="upload a zip/tar of <class>/<image> (admin key)")
    up.add_argument("archive")
    up.add_argument("--name", help="default: the file name")
    up.add_argument("--suite", action="store_true", help="register as a zero-shot evaluation suite")
    up.add_argument("--test-fraction", type=float, default=0.2)
    up.add_argument("--seed", type=int, default=0)
    http.client_args(up)
    up.set_defaults(func=cmd_dataset_upload)
    ls = sub.add_parser("list")
    http.client_args(ls)
    ls.set_defaults(func=cmd_dataset_list)


# -- job -------------------------------------------------------------------------------------

def parse_values(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs: each value read as JSON (6, 1e-5, true, "x"), else as a string."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            sys.exit(f"expected KEY=VALUE, got {pair!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def cmd_job_create(args) -> int:
    body = {"dataset_id": args.dataset, "method": args.method, "hparams": parse_values(args.set),
            "gate": parse_values(args.gate), "idempotency_key": args.idempotency_key}
    job = http.request("POST", f"{http.base_url(args)}/v1/jobs", json=body,
                       headers=http.admin_headers(args)).json()
    print(f"job {job['id']} {job['state']} ({job['method']}, {job['total_steps']} steps)")
    if args.watch:
        args.job = job["id"]
        return cmd_job_watch(args)
    return 0


def cmd_job_watch(args) -> int:
    from tqdm import tqdm

    url = f"{http.base_url(args)}/v1/jobs/{args.job}"
    job = http.request("GET", url).json()
    with tqdm(total=max(job["total_steps"], 1), unit="step", dynamic_ncols=True) as bar:
        while True:
            bar.total = max(job["total_steps"], 1)
            bar.n = job["step"]
            losses = " ".join(f"{k}={v:.3f}" for k, v in (job["losses"] or {}).items())
            bar.set_description(job["state"])
            bar.set_postfix_str(losses + (f" eta {job['eta_s']:.0f}s" if job["eta_s"] else ""))
            bar.refresh()
            if job["state"] in _TERMINAL:
                break
            time.sleep(args.interval)
            job = http.request("GET", url).json()
    print(f"job {job['id']}: {job['state']}")
    report = job.get("report") or {}
    for row in report.get("rows", []):
        print(f"  {row['kind']:<9} {row['dataset']:<20} {row['before']:6.2f} -> {row['after']:6.2f} "
              f"({row['delta']:+.2f} ± {row.get('margin', 0.0):.2f}, {row.get('n', '?')} images, "
              f"dataset {row.get('dataset_id', '?')})")
    for reason in report.get("reasons", []):
        print(f"  gate: {reason}")
    if job.get("error"):
        print(f"  error: {job['error'].get('type')}: {job['error'].get('message')}")
    if job.get("candidate_version") and job["state"] == "succeeded":
        print(f"  now serving {job['candidate_version']}")
    return {"succeeded": 0, "rejected": 2}.get(job["state"], 1)


def cmd_job_cancel(args) -> int:
    job = http.request("POST", f"{http.base_url(args)}/v1/jobs/{args.job}/cancel",
                       headers=http.admin_headers(args)).json()
    print(f"job {job['id']}: {job['state']}")
    return 0


def add_job(subparsers) -> None:
    p = subparsers.add_parser("job", help="create, watch or cancel update jobs")
    sub = p.add_subparsers(dest="job_command", required=True)
    create = sub.add_parser("create", help="start an update on a dataset (admin key)")
    create.add_argument("dataset", help="dataset id")
    create.add_argument("--method", default="zscl")
    create.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="hyper-parameter, e.g. --set steps=200 --set lr=1e-5")
    create.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE",
                        help="gate policy, e.g. --gate max_mean_drop=1.0")
    create.add_argument("--idempotency-key")
    create.add_argument("--watch", action="store_true", help="then show a live progress bar")
    create.add_argument("--interval", type=float, default=1.0)
    http.client_args(create)
    create.set_defaults(func=cmd_job_create)
    watch = sub.add_parser("watch", help="live progress bar until the job ends")
    watch.add_argument("job")
    watch.add_argument("--interval", type=float, default=1.0)
    http.client_args(watch)
    watch.set_defaults(func=cmd_job_watch)
    cancel = sub.add_parser("cancel")
    cancel.add_argument("job")
    http.client_args(cancel)
    cancel.set_defaults(func=cmd_job_cancel)

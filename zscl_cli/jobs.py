"""``zscl job``: create, list, show, watch and cancel update jobs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator

from . import http
from .progress import ProgressLines
from .tables import print_table

__all__ = ["METHOD_NAMES", "add_job", "parse_values", "print_job"]

_TERMINAL = {"succeeded", "rejected", "failed", "cancelled"}


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


def print_job(job: dict) -> None:
    """The job's state, its gate table and reasons, its error, and what it promoted."""
    print(f"job {job['id']}: {job['state']}  ({job['method']} on dataset {job['dataset_id']}, "
          f"step {job['step']}/{job['total_steps']}, base {job['base_version'] or '-'})")
    report = job.get("report") or {}
    rows = report.get("rows", [])
    if rows:
        print(f"  {'kind':<9} {'dataset':<20} {'before':>6}    {'after':>6} (delta ± margin, images, id)")
    for row in rows:
        print(f"  {row['kind']:<9} {row['dataset']:<20} {row['before']:6.2f} -> {row['after']:6.2f} "
              f"({row['delta']:+.2f} ± {row.get('margin', 0.0):.2f}, {row.get('n', '?')} images, "
              f"dataset {row.get('dataset_id', '?')})")
    for reason in report.get("reasons", []):
        print(f"  gate: {reason}")
    if report.get("superseded"):
        print(f"  {report['superseded']}")
    if job.get("error"):
        print(f"  error: {job['error'].get('type')}: {job['error'].get('message')}")
    if job.get("candidate_version") and job["state"] == "succeeded":
        print(f"  promoted: {job['candidate_version']}")


def cmd_job_create(args) -> int:
    """``zscl job create``: start an update on a dataset; with --watch, follow it to its end."""
    body = {"dataset_id": args.dataset, "method": args.method, "hparams": parse_values(args.set),
            "gate": parse_values(args.gate), "idempotency_key": args.idempotency_key}
    job = http.call(args, "POST", "/v1/jobs", json=body).json()
    print(f"job {job['id']} {job['state']} ({job['method']}, {job['total_steps']} steps)")
    if args.watch:
        args.job = job["id"]
        return cmd_job_watch(args)
    return 0


def cmd_job_list(args) -> int:
    """``zscl job list``: a table of the newest jobs, or how to start the first."""
    jobs = http.call(args, "GET", "/v1/jobs", params={"limit": args.limit}).json()
    rows = [(job["id"], job["state"], f"{job['progress']:.0%}",
             f"{job['eta_s']:.0f}s" if job["eta_s"] and job["state"] not in _TERMINAL else None,
             job["method"], job["dataset_id"], job["created_at"]) for job in jobs]
    print_table(("ID", "STATE", "PROGRESS", "ETA", "METHOD", "DATASET", "CREATED"), rows,
                right={"PROGRESS", "ETA"},
                empty="no jobs yet: start one with `zscl job create <dataset id>` "
                      "(`zscl dataset list` shows the ids)")
    return 0


def cmd_job_show(args) -> int:
    """``zscl job show``: one job's state and gate table, or its whole record with --json."""
    job = http.call(args, "GET", f"/v1/jobs/{args.job}").json()
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    print_job(job)
    return 0


def _snapshots(args) -> Iterator[dict]:
    """The job, fetched every ``args.interval`` seconds, until it ends (its last state included)."""
    while True:
        job = http.call(args, "GET", f"/v1/jobs/{args.job}").json()
        yield job
        if job["state"] in _TERMINAL:
            return
        time.sleep(args.interval)


def _watch_bar(snapshots: Iterator[dict]) -> dict:
    """A live tqdm line, redrawn in place (a terminal)."""
    from tqdm import tqdm

    with tqdm(total=1, unit="step", dynamic_ncols=True, file=sys.stdout) as bar:
        for job in snapshots:
            bar.total = max(job["total_steps"], 1)
            bar.n = job["step"]
            losses = " ".join(f"{k}={v:.3f}" for k, v in (job["losses"] or {}).items())
            bar.set_description(job["state"])
            bar.set_postfix_str(losses + (f" eta {job['eta_s']:.0f}s" if job["eta_s"] else ""))
            bar.refresh()
    return job


def _watch_lines(snapshots: Iterator[dict], lines: ProgressLines) -> dict:
    """Only the lines ``lines`` lets through (a file or a pipe: no redrawn line)."""
    for job in snapshots:
        line = lines.update(job)
        if line is not None:
            print(line, flush=True)
    return job


def cmd_job_watch(args) -> int:
    """``zscl job watch``: follow a job to its end; exit 0 if it succeeded, 2 if refused, else 1."""
    snapshots = _snapshots(args)
    if sys.stdout.isatty():
        job = _watch_bar(snapshots)
    else:
        job = _watch_lines(snapshots, ProgressLines(args.every))
    print_job(job)
    if job["state"] == "succeeded" and job.get("candidate_version"):
        _wait_served(args, job["candidate_version"])
    return {"succeeded": 0, "rejected": 2}.get(job["state"], 1)


SWAP_PATIENCE_S = 60  # an API process switches once it has loaded the version: seconds, on a CPU


def _wait_served(args, version: str) -> None:
    """Return once the API answers from ``version`` (the pointer moves at promotion; each API
    process then loads the version and swaps), so that the next command is answered by it."""
    deadline = time.monotonic() + SWAP_PATIENCE_S
    served = None
    while time.monotonic() < deadline:
        served = http.call(args, "GET", "/livez").headers.get("X-Model-Version")
        if served == version:
            print(f"  now serving {version}")
            return
        time.sleep(0.5)
    print(f"  the API still answered from {served} after {SWAP_PATIENCE_S} s; it switches to "
          f"{version} once it has loaded it (`zscl models list` shows the pointer)")


def cmd_job_cancel(args) -> int:
    """``zscl job cancel``: ask the server to stop a job."""
    job = http.call(args, "POST", f"/v1/jobs/{args.job}/cancel").json()
    print(f"job {job['id']}: {job['state']}")
    return 0


# the names of zscl_core.METHODS (not imported here: it imports torch); a test keeps them equal
METHOD_NAMES = ("zscl", "zscl_no_avg", "zscl_no_distill", "continual_ft", "lwf", "wise_ft")


def _percent(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a whole percent from 1 to 100, not {text}")
    return value


def _watch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="how often to ask the server for the job's progress (1.0)")
    parser.add_argument("--every", type=_percent, default=10, metavar="PERCENT",
                        help="when the output is not a terminal: print a line each PERCENT of "
                             "progress and at each state change, instead of a live bar (10)")


def add_job(subparsers) -> None:
    """Register ``zscl job`` and its subcommands on the ``zscl`` parser."""
    p = subparsers.add_parser("job", help="create, list, show, watch or cancel update jobs")
    sub = p.add_subparsers(dest="job_command", required=True)
    create = sub.add_parser("create", help="start an update on a dataset (admin key)")
    create.add_argument("dataset", help="dataset id (`zscl dataset list` shows them)")
    create.add_argument("--method", default="zscl",
                        help="update method, one of " + ", ".join(METHOD_NAMES) + " (default "
                             "zscl: learns the dataset and keeps its zero-shot skill; "
                             "continual_ft: plain fine-tuning, for comparison)")
    create.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="hyper-parameter, e.g. --set steps=200 --set lr=1e-5")
    create.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE",
                        help="gate policy, e.g. --gate max_mean_drop=1.0")
    create.add_argument("--idempotency-key", metavar="KEY",
                        help="a retried create with the same key returns the first job instead "
                             "of starting another")
    create.add_argument("--watch", action="store_true",
                        help="then follow its progress until it ends, as `zscl job watch` does")
    _watch_args(create)
    create.set_defaults(func=cmd_job_create)
    ls = sub.add_parser("list", help="the newest jobs: state, progress, ETA")
    ls.add_argument("--limit", type=int, default=50, help="newest jobs to show (50)")
    ls.set_defaults(func=cmd_job_list)
    show = sub.add_parser("show", help="one job: state, progress and the gate table")
    show.add_argument("--json", action="store_true", help="the whole record as JSON")
    show.set_defaults(func=cmd_job_show)
    watch = sub.add_parser("watch", help="follow a job's progress until it ends, then show the "
                                         "gate table (a live bar on a terminal)")
    _watch_args(watch)
    watch.set_defaults(func=cmd_job_watch)
    cancel = sub.add_parser("cancel", help="stop a job (admin key)")
    cancel.set_defaults(func=cmd_job_cancel)
    for command in (show, watch, cancel):
        command.add_argument("job", help="job id (`zscl job list` shows them)")
    for command in sub.choices.values():
        http.client_args(command)

"""``zscl job``: create, list, show, watch and cancel update jobs."""

from __future__ import annotations

import json
import sys
import time

from . import http

__all__ = ["add_job", "parse_values", "print_job"]

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
        print(f"  now serving {job['candidate_version']}")


def cmd_job_create(args) -> int:
    body = {"dataset_id": args.dataset, "method": args.method, "hparams": parse_values(args.set),
            "gate": parse_values(args.gate), "idempotency_key": args.idempotency_key}
    job = http.call(args, "POST", "/v1/jobs", json=body).json()
    print(f"job {job['id']} {job['state']} ({job['method']}, {job['total_steps']} steps)")
    if args.watch:
        args.job = job["id"]
        return cmd_job_watch(args)
    return 0


def cmd_job_list(args) -> int:
    for job in http.call(args, "GET", "/v1/jobs", params={"limit": args.limit}).json():
        eta = f" eta {job['eta_s']:.0f}s" if job["eta_s"] and job["state"] not in _TERMINAL else ""
        print(f"{job['id']}  {job['state']:<10} {job['progress']:>4.0%}{eta:<10} "
              f"{job['method']:<13} dataset={job['dataset_id']} created={job['created_at']}")
    return 0


def cmd_job_show(args) -> int:
    job = http.call(args, "GET", f"/v1/jobs/{args.job}").json()
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    print_job(job)
    return 0


def cmd_job_watch(args) -> int:
    from tqdm import tqdm

    job = http.call(args, "GET", f"/v1/jobs/{args.job}").json()
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
            job = http.call(args, "GET", f"/v1/jobs/{args.job}").json()
    print_job(job)
    return {"succeeded": 0, "rejected": 2}.get(job["state"], 1)


def cmd_job_cancel(args) -> int:
    job = http.call(args, "POST", f"/v1/jobs/{args.job}/cancel").json()
    print(f"job {job['id']}: {job['state']}")
    return 0


def add_job(subparsers) -> None:
    p = subparsers.add_parser("job", help="create, list, show, watch or cancel update jobs")
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
    create.set_defaults(func=cmd_job_create)
    ls = sub.add_parser("list", help="the newest jobs: state, progress, ETA")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_job_list)
    show = sub.add_parser("show", help="one job: state, progress and the gate table")
    show.add_argument("--json", action="store_true", help="the whole record as JSON")
    show.set_defaults(func=cmd_job_show)
    watch = sub.add_parser("watch", help="live progress bar until the job ends")
    watch.add_argument("--interval", type=float, default=1.0)
    watch.set_defaults(func=cmd_job_watch)
    cancel = sub.add_parser("cancel", help="stop a job (admin key)")
    cancel.set_defaults(func=cmd_job_cancel)
    for command in (show, watch, cancel):
        command.add_argument("job", help="job id")
    for command in sub.choices.values():
        http.client_args(command)

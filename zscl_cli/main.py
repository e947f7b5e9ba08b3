"""The ``zscl`` command: a flat list of small subcommand functions on argparse subparsers.

Add a subcommand with one ``_add_<name>(subparsers)`` function that sets ``func`` and register
it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .datasets import add_dataset
from .http import call, client_args, load_settings
from .jobs import add_job
from .label_sets import add_label_set
from .worker import add_worker, embedded_worker

__all__ = ["main", "COMMANDS"]

logger = logging.getLogger("zscl")


# -- serve -----------------------------------------------------------------------------------

def cmd_serve(args) -> int:
    import uvicorn

    from service.app import create_app
    from service.bootstrap import describe_served_model
    settings = load_settings()
    if args.host:
        settings.host = args.host
    if args.port is not None:
        settings.port = args.port
    url = f"http://{settings.host}:{settings.port}"
    mode = f"distributed (Redis {settings.redis_url})" if settings.distributed else "embedded (SQLite, no Redis)"
    print(f"zscl serving at {url}  (API docs: {url}/docs)\n  mode: {mode}; data: {settings.data_dir}; "
          f"model: {describe_served_model(settings)}\n  press Ctrl-C to stop", flush=True)
    with embedded_worker(settings):
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


def _add_serve(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP API (embedded mode by default)")
    p.add_argument("--host", help="default $ZSCL_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default $ZSCL_PORT or 8000")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


# -- classify --------------------------------------------------------------------------------

def cmd_classify(args) -> int:
    files = [("images", (Path(p).name, Path(p).read_bytes())) for p in args.images]
    data: dict[str, object] = {"top_k": str(args.top_k)}
    if args.labels:
        data["labels"] = args.labels
    if args.label_set:
        data["label_set"] = args.label_set
    response = call(args, "POST", "/v1/classify", files=files, data=data)
    body = response.json()
    print(f"model version {body['model_version']} ({body['time_ms']:.1f} ms)")
    for result in body["results"]:
        ranked = ", ".join(f"{s['label']} {s['probability']:.3f}" for s in result["labels"])
        print(f"{result['image']}: {ranked}")
    return 0


def _add_classify(subparsers) -> None:
    p = subparsers.add_parser("classify", help="classify images with a running server")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", help="comma-separated candidate labels, e.g. cat,dog,car")
    p.add_argument("--label-set", help="name of a stored label set instead of --labels")
    p.add_argument("--top-k", type=int, default=5)
    client_args(p)
    p.set_defaults(func=cmd_classify)


# -- models ----------------------------------------------------------------------------------

def cmd_models_list(args) -> int:
    body = call(args, "GET", "/v1/models").json()
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    for v in body["versions"]:
        mark = "*" if v["serving"] else " "
        print(f"{mark} {v['id']}  parent={v['parent'] or '-'}  method={v['method'] or '-'}  "
              f"created={v['created_at']}")
    return 0


def cmd_models_activate(args) -> int:
    body = call(args, "POST", f"/v1/models/{args.version}/activate").json()
    print(f"serving {body['version']} (was {body['previous']}, generation {body['generation']})")
    return 0


def _add_models(subparsers) -> None:
    p = subparsers.add_parser("models", help="list or activate model versions")
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", help="every version; * marks the served one")
    ls.add_argument("--json", action="store_true")
    client_args(ls)
    ls.set_defaults(func=cmd_models_list)
    act = sub.add_parser("activate", help="serve a version (promote or roll back; admin key)")
    act.add_argument("version")
    client_args(act)
    act.set_defaults(func=cmd_models_activate)


# -- bench -----------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    from zscl_bench.cli import main as bench_main  # lazy: written separately, and heavy
    return bench_main(list(args.bench_args)) or 0


def _add_bench(subparsers) -> None:
    p = subparsers.add_parser("bench", help="ZSCL benchmarks (arguments go to zscl_bench)",
                              add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve, _add_classify, _add_models, add_worker, add_dataset, add_job, add_label_set,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zscl", description="Serve CLIP zero-shot classification "
                                     "and keep it learning without forgetting (ZSCL).")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per client request is noise
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after 'bench', options included, is zscl_bench's
        args = argparse.Namespace(func=cmd_bench, bench_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``zscl`` command: a flat list of small subcommand functions on argparse subparsers.

Add a subcommand with one ``_add_<name>(subparsers)`` function that sets ``func`` and register
it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .datasets import add_dataset
from .feedback import add_feedback
from .db import add_db
from .demo import add_demo
from .embed import add_embed
from .http import call, client_args, load_settings
from .jobs import add_job
from .label_sets import add_label_set
from .tables import print_table
from .worker import add_worker, embedded_worker

__all__ = ["main", "COMMANDS"]

logger = logging.getLogger("zscl")


# -- serve -----------------------------------------------------------------------------------

GRACEFUL_SHUTDOWN_S = 5   # requests in flight get this long to finish on Ctrl-C / SIGTERM
# uvicorn's supervisor restarts an API process that does not answer its ping in this long; the
# answering thread needs Python's lock, which importing torch or loading and tracing a model can
# hold for seconds at a time (uvicorn's default, 5 s, restarts busy, healthy processes)
WORKER_HEALTHCHECK_S = 60
PROCESS_LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def cmd_serve(args) -> int:
    """``zscl serve``: run the API (and, in embedded mode, its worker) until Ctrl-C or SIGTERM."""
    from service.bootstrap import describe_served_model
    settings = load_settings()
    if args.host:
        settings.host = args.host
    if args.port is not None:
        settings.port = args.port
    processes = settings.api_processes
    url = f"http://{settings.host}:{settings.port}"
    mode = f"distributed (Redis {settings.redis_url})" if settings.distributed else "embedded (SQLite, no Redis)"
    print(f"zscl serving at {url}  (API docs: {url}/docs)\n  mode: {mode}; data: {settings.data_dir}; "
          f"model: {describe_served_model(settings)}\n  API processes: {processes} "
          f"(ZSCL_API_WORKERS)\n  press Ctrl-C to stop", flush=True)
    if processes == 1:
        import uvicorn

        from service.app import create_app

        from .http_limits import uvicorn_options
        with embedded_worker(settings), _sigterm_like_ctrl_c():
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                        log_level=args.log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                        **uvicorn_options(settings))
        return 0
    return _serve_processes(settings, processes, args.log_level)


@contextlib.contextmanager
def _sigterm_like_ctrl_c() -> Iterator[None]:
    """SIGTERM as KeyboardInterrupt (which uvicorn.run swallows), so that the embedded worker is
    stopped too: at SIGTERM's default action this process would end at once and leave it
    running. Once it has shut down, one uvicorn server raises again the signal that stopped it;
    and a SIGTERM may come before uvicorn has set its own handlers."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve_processes(settings, processes: int, log_level: str) -> int:
    """``processes`` API processes on one port: uvicorn's workers, each building its own app
    from the environment (``service.app:create_app`` as a factory), supervised by this one."""
    import uvicorn

    from .http_limits import uvicorn_options

    if "timeout_worker_healthcheck" not in inspect.signature(uvicorn.Config).parameters:
        sys.exit(f"running {processes} API processes needs uvicorn >= 0.37 (older ones restart a "
                 f"process busy loading its model after 5 s): pip install -U 'uvicorn>=0.37', "
                 f"or set ZSCL_API_WORKERS=1")
    _bootstrap_once(settings)
    with embedded_worker(settings), _sigterm_like_ctrl_c(), _process_environment(settings, processes):
        uvicorn.run("service.app:create_app", factory=True, workers=processes,
                    host=settings.host, port=settings.port, log_level=log_level,
                    log_config=_process_log_config(), timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_S, **uvicorn_options(settings))
    return 0


def _bootstrap_once(settings) -> None:
    """Register and serve ``ZSCL_MODEL`` here, before the API processes start, so that they
    never build the same model at once (the starter takes about a minute); each finds the
    pointer set. A failure is left to them to report on /readyz, as one process would."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.bootstrap import bootstrap
    from zscl_core import ZSCLError
    try:
        version = bootstrap(settings)
    except (ZSCLError, OSError, SQLAlchemyError) as exc:
        logger.error("could not bootstrap ZSCL_MODEL=%r: %s; the API processes will say so on "
                     "/readyz and wait for a version to be activated", settings.model, exc)
        return
    logger.info("serving version %s", version)


@contextlib.contextmanager
def _process_environment(settings, processes: int) -> Iterator[None]:
    """The environment the API processes are spawned with, restored at the end: what the
    command line changed (they read ``Settings()`` afresh), torch threads shared out between
    them unless ``ZSCL_TORCH_THREADS`` is set, and a fresh directory for prometheus_client's
    multiprocess mode (``service.metrics``), removed at the end. Entered after the embedded
    worker starts, so that its training keeps every thread."""
    from service.metrics import MULTIPROC_DIR_ENV

    metrics_dir = tempfile.mkdtemp(prefix="zscl-metrics-")
    values = {"ZSCL_HOST": settings.host, "ZSCL_PORT": str(settings.port),
              MULTIPROC_DIR_ENV: metrics_dir}
    if settings.torch_threads is None:
        values["ZSCL_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _process_log_config() -> dict:
    """uvicorn's logging, plus the root logger as :func:`main` sets it, naming the process:
    the API processes are spawned afresh and run no ``main()``."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["zscl"] = {"format": PROCESS_LOG_FORMAT}
    config["handlers"]["zscl"] = {"class": "logging.StreamHandler", "formatter": "zscl",
                                  "stream": "ext://sys.stderr"}
    config["root"] = {"level": "INFO", "handlers": ["zscl"]}
    config["loggers"]["httpx"] = {"level": "WARNING"}
    return config


def _add_serve(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP API (embedded mode by default)")
    p.add_argument("--host", help="default $ZSCL_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default $ZSCL_PORT or 8000")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="uvicorn's log level: debug, info (default), warning or error")
    p.set_defaults(func=cmd_serve)


# -- classify --------------------------------------------------------------------------------

def cmd_classify(args) -> int:
    """``zscl classify``: send image files to a running server and print each one's ranked labels."""
    files = [("images", (Path(p).name, Path(p).read_bytes())) for p in args.images]
    data: dict[str, object] = {"top_k": str(args.top_k)}
    if args.labels:
        data["labels"] = args.labels
    if args.label_set:
        data["label_set"] = args.label_set
    if args.keep is not None:
        data["keep"] = str(args.keep).lower()
    response = call(args, "POST", "/v1/classify", files=files, data=data)
    body = response.json()
    print(f"model version {body['model_version']} ({body['time_ms']:.1f} ms)")
    for result in body["results"]:
        ranked = ", ".join(f"{s['label']} {s['probability']:.3f}" for s in result["labels"])
        kept = f"  [prediction {result['prediction_id']}]" if result.get("prediction_id") else ""
        print(f"{result['image']}: {ranked}{kept}")
    return 0


def _add_classify(subparsers) -> None:
    p = subparsers.add_parser("classify", help="classify images with a running server")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", help="comma-separated candidate labels, e.g. cat,dog,car")
    p.add_argument("--label-set", help="name of a stored label set instead of --labels")
    p.add_argument("--top-k", type=int, default=5, help="labels to show per image (5)")
    p.add_argument("--keep", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the images for feedback (`zscl feedback send <prediction> "
                        "<label>`); default: the label set's keep_images")
    client_args(p)
    p.set_defaults(func=cmd_classify)


# -- models ----------------------------------------------------------------------------------

def cmd_models_list(args) -> int:
    """``zscl models list``: the model versions, the served one starred."""
    body = call(args, "GET", "/v1/models").json()
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    rows = [(f"{'*' if v['serving'] else ' '} {v['id']}", v["parent"], v["method"], v["created_at"])
            for v in body["versions"]]
    print_table(("  VERSION (* served)", "PARENT", "METHOD", "CREATED"), rows,
                empty="no model versions yet: `zscl serve` registers ZSCL_MODEL (default: "
                      "starter) when it starts, and each update job that passes its gate adds one")
    return 0


def cmd_models_activate(args) -> int:
    """``zscl models activate``: serve another version (promote or roll back)."""
    body = call(args, "POST", f"/v1/models/{args.version}/activate").json()
    print(f"serving {body['version']} (was {body['previous']}, generation {body['generation']})")
    return 0


def _add_models(subparsers) -> None:
    p = subparsers.add_parser("models", help="list or activate model versions")
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", help="every version; * marks the served one")
    ls.add_argument("--json", action="store_true", help="the server's whole answer as JSON")
    client_args(ls)
    ls.set_defaults(func=cmd_models_list)
    act = sub.add_parser("activate", help="serve a version (promote or roll back; admin key)")
    act.add_argument("version", help="version id (`zscl models list` shows them)")
    client_args(act)
    act.set_defaults(func=cmd_models_activate)


# -- bench -----------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    """``zscl bench``: hand every argument after it to ``zscl_bench``'s own command line."""
    from zscl_bench.cli import main as bench_main  # lazy: written separately, and heavy
    return bench_main(list(args.bench_args)) or 0


def _add_bench(subparsers) -> None:
    p = subparsers.add_parser("bench", help="the benchmarks, mtil and updates (zscl bench --help "
                              "describes them)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER,
                   help="the benchmark and its options, e.g. mtil --quick (see zscl bench --help)")
    p.set_defaults(func=cmd_bench)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve, _add_classify, add_embed, _add_models, add_worker, add_dataset, add_job,
    add_label_set, add_feedback, add_db, add_demo, _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``zscl`` argument parser, with every subcommand :data:`COMMANDS` adds."""
    parser = argparse.ArgumentParser(prog="zscl", description="Serve CLIP zero-shot classification "
                                     "and keep it learning without forgetting (ZSCL).")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``zscl`` console script: set up logging, run the chosen subcommand, return its exit status."""
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

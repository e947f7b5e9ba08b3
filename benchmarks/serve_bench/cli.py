"""Serving benchmark: /v1/classify over HTTP beside the model's raw batched forward and LitServe.

The command line: ``run(argv)`` resolves the settings, starts the servers, measures and returns
every figure as plain data; ``main`` prints the report.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tempfile
from pathlib import Path

from .client import ClientPool
from .inputs import GENERATED_IMAGES, LABELS, get_request, materialise, read_images, synthetic_jpegs
from .measure import big_label_latency, http_measurer, measure_all, timed
from .raw import load_raw, raw_forward, tower_dtype
from .report import format_report
from .servers import Servers, sigterm_as_exit


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (default) or 'small' (built-in, random weights), 'starter', an "
                             "open_clip architecture such as ViT-B-16 (random weights unless "
                             "--pretrained), a config JSON or a version dir")
    parser.add_argument("--pretrained", help="with an open_clip name: a tag or checkpoint path")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: the service's "
                        "ZSCL_DEVICE, the raw forward's and LitServe's device")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="served precision, every side (auto: the product's default for the device)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 32],
                        help="open connections, comma-separated (default 1,8,32)")
    parser.add_argument("--images-per-request", type=_ints, default=[1],
                        help="images per multipart request, comma-separated (default 1; at most "
                             "the service's ZSCL_MAX_BATCH_IMAGES, 64)")
    parser.add_argument("--images", type=Path, help="a folder tree of .jpg files to send (e.g. "
                        "cifar10/test); default: generated JPEGs of the model's image size")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="measuring time per system and (request size, concurrency), split "
                             "over the rounds (default 6)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each measurement is split into this many rounds, the servers and the "
                             "raw forward taking turns")
    parser.add_argument("--client-procs", type=int, help="load-generating processes (default: 1 "
                        "on CPU, max(1, min(8, cores // 2)) on CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads, every side (default: 1 on CPU, "
                        "for steady figures on a shared machine; on CUDA the service's own "
                        "default, LitServe's workers cores // workers, the raw forward torch's)")
    parser.add_argument("--batch", type=int, help="images per forward, every side, and the raw "
                        "batch (default: the service's default for the device: 8 CPU, 128 GPU)")
    parser.add_argument("--wait-ms", type=float, default=5.0,
                        help="the servers' batch wait (the service's batch_max_wait_ms, "
                             "LitServe's batch_timeout)")
    parser.add_argument("--api-workers", type=int, help="the service's HTTP processes "
                        "(ZSCL_API_WORKERS; default: the product's default for the device)")
    parser.add_argument("--no-litserve", dest="litserve", action="store_false",
                        help="skip the LitServe peer")
    parser.add_argument("--litserve-workers", type=int, help="LitServe's workers_per_device "
                        "(default: 1 on CPU, max(2, service HTTP processes // 2) on CUDA)")
    parser.add_argument("--no-pause", dest="pause_idle", action="store_false",
                        help="leave the idle server running while the other one or the raw "
                             "forward is measured (by default it is paused: Servers.only)")
    parser.add_argument("--no-tune-malloc", dest="tune_malloc", action="store_false", default=None,
                        help="leave glibc's malloc at its defaults on every side (the service "
                             "keeps freed memory by default, zscl_core.runtime)")
    parser.add_argument("--big-labels", type=int, default=1000,
                        help="labels of the head-cache miss request (0: skip it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


def resolve(args: argparse.Namespace) -> dict:
    """Every setting of the run, the product's defaults for the device filled in."""
    from records.settings import Settings

    cuda = args.device.startswith("cuda")
    chosen = {"inference_dtype": None if args.dtype == "auto" else args.dtype,
              "api_workers": args.api_workers, "batch_max_size": args.batch}
    # what the flags leave out comes from the environment (ZSCL_*) or the product's defaults
    settings = Settings(device=args.device, **{k: v for k, v in chosen.items() if v is not None})
    if max(args.images_per_request) > settings.max_batch_images:
        raise SystemExit(f"--images-per-request {max(args.images_per_request)} is over the service's "
                         f"limit of {settings.max_batch_images} (ZSCL_MAX_BATCH_IMAGES)")
    cores = os.cpu_count() or 2
    api_processes = getattr(settings, "api_processes", 1)
    threads = args.threads if args.threads or cuda else 1
    workers = args.litserve_workers or (max(2, api_processes // 2) if cuda else 1)
    return {"model": args.model, "device": args.device, "served_dtype": settings.served_dtype,
            "batch": settings.max_batch, "wait_ms": args.wait_ms, "api_processes": api_processes,
            "threads": threads,
            "client_procs": args.client_procs or (max(1, min(8, cores // 2)) if cuda else 1),
            "tune_malloc": settings.tune_malloc if args.tune_malloc is None else args.tune_malloc,
            "trace_images": settings.trace_images,
            "queue_max": max(settings.queue_max, max(args.concurrency) * max(args.images_per_request)),
            "litserve": args.litserve, "litserve_workers": workers, "pause_idle": args.pause_idle,
            # the cores shared out between its workers, as `zscl serve` shares them between its
            # HTTP processes
            "litserve_threads": threads or max(1, cores // workers),
            "litserve_fast_queue": cuda and _has_module("zmq"),
            "concurrency": args.concurrency, "images_per_request": args.images_per_request,
            "seconds": args.seconds, "rounds": args.rounds, "cpus": cores}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark with command-line arguments ``argv``; every figure as plain data.

    Returns:
        ``config``: the resolved settings (model, device, device_name, image_size, served_dtype,
        raw_dtype, batch, wait_ms, api_processes, client_procs, litserve_workers, ...);
        ``levels``: one dict per (request size, concurrency) with ``images_per_request``,
        ``concurrency``, the rows ``service``, ``raw`` and ``litserve`` (absent with
        --no-litserve), each with ``img_s``, ``req_s``, ``p50_ms``, ``p99_ms``, ``mean_batch``,
        ``errors``, ``images``, ``requests``, ``wall_s``, ``faults_per_image`` (None where
        unknown; the raw row's requests are batches, its latency a batch's time),
        ``service_over_raw`` and ``service_over_litserve`` (img/s ratios), ``client_ceiling``
        (the same row for ``/livez``) and ``client_ceiling_rps`` (its requests/s);
        ``big_labels``: ``labels``, ``miss_ms``, ``hit_ms`` (or None); ``timings_s``: seconds
        per part of the run.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    import torch

    from zscl_core.runtime import tune_process

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}, but torch {torch.__version__} sees no CUDA device")
    plan = resolve(args)
    # the raw forward runs under the service's process settings: an honest ceiling (the
    # caller's torch threads come back after: run may be imported)
    threads = torch.get_num_threads()
    tune_process(torch_threads=plan["threads"], tune_malloc=plan["tune_malloc"])
    timings: dict[str, float] = {}
    try:
        with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="zscl-bench-") as tmp:
            result = _run_in(Path(tmp), args, plan, timings)
    finally:
        torch.set_num_threads(threads)
    result["timings_s"] = timings
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def _run_in(tmp: Path, args: argparse.Namespace, plan: dict, timings: dict[str, float]) -> dict:
    with timed(timings, "model: build and save the version"):
        version_dir = materialise(args.model, args.pretrained, tmp / "data")
    with timed(timings, "start-up: service, LitServe and the raw model"):
        servers = Servers(plan, tmp / "data", version_dir, tmp)
        try:
            served = load_raw(version_dir, plan["device"], plan["served_dtype"], plan["trace_images"])
            servers.wait_ready()
        except BaseException:
            servers.stop()
            raise
    try:
        return _measure(served, servers, args, plan, timings)
    finally:
        with timed(timings, "stop the servers"):
            servers.stop()


def _measure(served, servers: Servers, args: argparse.Namespace, plan: dict,
             timings: dict[str, float]) -> dict:
    import torch
    from PIL import Image

    image_size = served.preprocess(Image.new("RGB", (8, 8))).shape[-1]
    with timed(timings, "inputs: images, raw batch, client processes"):
        images = read_images(args.images) if args.images else synthetic_jpegs(image_size, GENERATED_IMAGES)
        # as requests bring them (uint8 where the transform splits): the service's own path
        pixels = torch.stack([served.request_transform(Image.open(io.BytesIO(images[i % len(images)])).convert("RGB"))
                              for i in range(plan["batch"])])
        head = served.build_head(LABELS, ["a photo of a {}."])
        pool = ClientPool(plan["client_procs"])
    try:
        measurers = {"service": http_measurer(pool, servers, "service", images),
                     "raw": lambda size, c, seconds: raw_forward(served, pixels, head, seconds)}
        if "litserve" in servers.procs:
            measurers["litserve"] = http_measurer(pool, servers, "litserve", images)
        livez = [get_request(f"127.0.0.1:{servers.ports['service']}", "/livez")]
        levels = measure_all(measurers, lambda c, seconds: pool.measure(
            "127.0.0.1", servers.ports["service"], "livez", livez, c, seconds, 1), plan, timings,
            alone=servers.only)
        big = None
        if args.big_labels:
            with timed(timings, f"{args.big_labels}-label request"), servers.only("service"):
                big = big_label_latency(servers.url("service"), images[0], args.big_labels, repeats=3)
    finally:
        pool.close()
    config = dict(plan, image_size=image_size, images=str(args.images) if args.images else
                  f"{len(images)} generated JPEGs", torch=torch.__version__,
                  raw_dtype=tower_dtype(served),
                  device_name=(torch.cuda.get_device_name(plan["device"])
                               if plan["device"].startswith("cuda") else "cpu"))
    return {"config": config, "levels": levels, "big_labels": big}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="  .. %(message)s")
    logging.getLogger(__package__).setLevel(logging.INFO)  # every module's progress
    result = run(argv)
    print(format_report(result))
    return 0

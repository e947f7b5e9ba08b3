"""The GPU check: serving, training step cost and one real update job, in one run, one table.

    python -m benchmarks.gpu_check --device cuda --model ViT-B-16 --images DIR   # on a GPU
    python -m benchmarks.gpu_check --device cpu --model tiny                     # CI smoke run

It runs, one after another, on the device it is given:
1. ``benchmarks.serve_bench``: a real ``zscl serve`` against the raw forward at the served
   precision and LitServe, with one-image and many-image requests, at two concurrencies;
2. ``benchmarks.step_cost``: seconds per training step, Continual-FT against ZSCL, on the job's
   own input pipeline;
3. one ZSCL job through a real ``zscl serve`` with its embedded worker (upload, job, gate):
   ``--job-steps`` steps at batch ``--job-batch`` (the paper's 1,000 at 64 on a GPU), and the
   job's own figures (training seconds, data wait, evaluation).
Then it prints one table with the issue's targets beside the figures (``--json`` keeps them).
``DIR`` is a CIFAR-10 export (``train/<class>/*.jpg``, ``test/<class>/*.jpg``); without it the
images are generated JPEGs. ``--model`` is ``tiny`` (the tests' size, for the smoke run), an
open_clip architecture with random weights (speed does not depend on the weights), or any
``ZSCL_MODEL`` source.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

from benchmarks import serve_bench, step_cost

__all__ = ["main", "run"]

logger = logging.getLogger("gpu_check")

ADMIN_KEY = "gpu-check-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--images", type=Path, help="CIFAR-10 export: train/<class>/*.jpg, test/<class>/*.jpg")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--serve-seconds", type=float, default=None, help="per serving measurement "
                   "(default: 8 on a GPU, 1.5 on the CPU)")
    p.add_argument("--concurrency", default=None, help="default 32,128 on a GPU, 8 on the CPU")
    p.add_argument("--images-per-request", default=None, help="default 1,32 on a GPU, 1,4 on the CPU")
    p.add_argument("--step-batch", type=int, default=None, help="default 64 on a GPU, 8 on the CPU")
    p.add_argument("--step-steps", type=int, default=None, help="timed steps (default 20 / 3)")
    p.add_argument("--job-steps", type=int, default=None, help="default 1000 on a GPU, 10 on the CPU")
    p.add_argument("--job-batch", type=int, default=None, help="default 64 on a GPU, 8 on the CPU")
    p.add_argument("--job-images", type=int, default=None, help="train images per class uploaded "
                   "(default 200 on a GPU, 6 on the CPU)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: serve,step,job")
    p.add_argument("--budget-s", type=float, default=0, help="seconds the whole check may take: "
                   "the job's steps are cut to fit, and the table says so (0: no budget)")
    return p


def _defaults(args) -> None:
    gpu = args.device.startswith("cuda")
    for name, on_gpu, on_cpu in [("serve_seconds", 8.0, 1.5), ("concurrency", "32,128", "8"),
                                 ("images_per_request", "1,32", "1,4"), ("step_batch", 64, 8),
                                 ("step_steps", 20, 3), ("job_steps", 1000, 10),
                                 ("job_batch", 64, 8), ("job_images", 200, 6)]:
        if getattr(args, name) is None:
            setattr(args, name, on_gpu if gpu else on_cpu)


def _model_source(model: str, workdir: Path) -> str:
    """A ZSCL_MODEL value: serve_bench's presets (tiny, small) become a config JSON."""
    if model in serve_bench.PRESETS:
        path = workdir / f"{model}-clip.json"
        path.write_text(json.dumps(serve_bench.PRESETS[model]))
        return str(path)
    return model


# -- 3. one job through a real `zscl serve` ---------------------------------------------------

def _dataset_zip(images: Path | None, per_class: int, workdir: Path) -> bytes:
    """train/<class>/ and test/<class>/ JPEGs: ``per_class`` train and a quarter as many test
    images per class, from a CIFAR-10 export or generated."""
    if images is None:
        images = step_cost.write_jpegs(workdir / "generated" / "train", 10, per_class).parent
        step_cost.write_jpegs(images / "test", 10, max(2, per_class // 4), seed=1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for split, count in (("train", per_class), ("test", max(2, per_class // 4))):
            for folder in sorted(p for p in (images / split).iterdir() if p.is_dir()):
                for path in sorted(folder.glob("*.jpg"))[:count]:
                    archive.write(path, f"{split}/{folder.name}/{path.name}")
    return buffer.getvalue()


def _wait(predicate, timeout_s: float, what: str, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def run_job(args, model: str, workdir: Path) -> dict:
    """Start `zscl serve` (embedded worker) on a fresh data dir, upload a dataset, run one ZSCL
    job to its end; the job's figures."""
    port = serve_bench.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ZSCL_DATA_DIR": str(workdir / "var"), "ZSCL_MODEL": model,
           "ZSCL_DEVICE": args.device, "ZSCL_PORT": str(port), "ZSCL_ADMIN_KEY": ADMIN_KEY,
           "ZSCL_START_WORKER": "true", "ZSCL_API_WORKERS": "1", "PYTHONUNBUFFERED": "1"}
    log_path = workdir / "job-serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "zscl_cli", "serve", "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        serve_bench.wait_ready(url, proc, log_path)
        ready_s = time.monotonic() - started
        body = _dataset_zip(args.images, args.job_images, workdir)
        response = httpx.post(f"{url}/v1/datasets", content=body, timeout=300, headers={
            **HEADERS, "Content-Type": "application/zip"}, params={"name": "check"})
        response.raise_for_status()
        dataset = response.json()
        response = httpx.post(f"{url}/v1/jobs", headers=HEADERS, timeout=30, json={
            "dataset_id": dataset["id"], "method": "zscl",
            "hparams": {"steps": args.job_steps, "batch_size": args.job_batch}})
        response.raise_for_status()
        job_id = response.json()["id"]
        job = _wait(lambda: (j := httpx.get(f"{url}/v1/jobs/{job_id}", headers=HEADERS,
                                            timeout=10).json())["state"]
                    in ("succeeded", "rejected", "failed", "cancelled") and j, 1800, "the job")
    except BaseException:
        log.flush()
        print(log_path.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        serve_bench.stop_server(proc, group=True)
        log.close()
    metrics = job.get("metrics") or {}
    busy = (metrics.get("data_wait_s") or 0) + (metrics.get("compute_s") or 0)
    return {"state": job["state"], "error": job.get("error"), "ready_s": ready_s,
            "train_images": dataset["n_train"], "steps": args.job_steps, "batch": args.job_batch,
            "train_s": metrics.get("train_s"), "s_per_step": metrics.get("s_per_step"),
            "data_wait_s": metrics.get("data_wait_s"), "compute_s": metrics.get("compute_s"),
            "data_wait_share": (metrics.get("data_wait_s") or 0) / busy if busy else None,
            "evaluate_s": metrics.get("evaluate_s"),
            "new_task_before": metrics.get("new_task_before"),
            "new_task_after": metrics.get("new_task_after")}


# -- the table --------------------------------------------------------------------------------

def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _rows(figures: dict) -> list[tuple[str, str, str]]:
    """(what, measured, target) rows."""
    rows = []
    for level in (figures.get("serve") or {}).get("levels", []):
        n, c = level.get("images_per_request"), level.get("concurrency")
        service, raw, lit = level.get("service", {}), level.get("raw", {}), level.get("litserve", {})
        target = ""
        if n == 1 and c == 128:
            target = ">= 2,000 img/s, p99 <= 300 ms, >= 0.5x raw, >= 1.2x LitServe"
        elif n and n > 1:
            target = ">= 0.8x raw"
        rows.append((f"serve {n} img/request, concurrency {c}",
                     f"{_fmt(service.get('img_s'), ',.0f')} img/s, p50 {_fmt(service.get('p50_ms'))}"
                     f" ms, p99 {_fmt(service.get('p99_ms'))} ms; raw {_fmt(raw.get('img_s'), ',.0f')}"
                     f" ({_fmt(level.get('service_over_raw'), '.2f')}x), LitServe "
                     f"{_fmt(lit.get('img_s'), ',.0f')} ({_fmt(level.get('service_over_litserve'), '.2f')}x);"
                     f" client ceiling {_fmt(level.get('client_ceiling_rps'), ',.0f')} req/s",
                     target))
    steps = (figures.get("step") or {}).get("variants", {})
    for name, v in steps.items():
        rows.append((f"step {name}", f"{v['s_per_step'] * 1000:.1f} ms/step, "
                     f"{v['ratio_to_continual_ft']:.2f}x Continual-FT, data wait "
                     f"{100 * v['data_wait_share']:.1f}%",
                     "<= 1.3x Continual-FT" if name.startswith("zscl") else ""))
    job = figures.get("job")
    if job:
        rows.append(("job: server ready", f"{_fmt(job['ready_s'])} s", ""))
        rows.append((f"job: ZSCL {job['steps']} steps, batch {job['batch']} ({job['state']})",
                     f"training {_fmt(job['train_s'])} s ({_fmt(job['s_per_step'] and job['s_per_step'] * 1000)}"
                     f" ms/step), data wait {_fmt(job['data_wait_share'] and 100 * job['data_wait_share'])}%"
                     f", evaluation {_fmt(job['evaluate_s'])} s; new task "
                     f"{_fmt(job['new_task_before'])} -> {_fmt(job['new_task_after'])} %",
                     "training <= 60 s, data wait < 10%"))
    return rows


def print_table(figures: dict) -> None:
    rows = [("what", "measured", "target (issue 19, GPU)"), *_rows(figures)]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\nGPU check: model {figures['model']} on {figures['device']} ({figures.get('gpu', '')}), "
          f"{figures['elapsed_s']:.0f} s so far")
    for name, error in (figures.get("errors") or {}).items():
        print(f"  part {name} FAILED: {error}")
    if figures.get("job_steps_fitted"):
        print(f"  job steps cut to fit the budget: {figures['job_steps_fitted']}")
    for i, row in enumerate(rows):
        print(" | ".join(cell.ljust(width[j]) for j, cell in enumerate(row)))
        if i == 0:
            print("-+-".join("-" * w for w in width))


def _serve_args(args) -> list[str]:
    serve_args = ["--model", args.model, "--device", args.device, "--concurrency", args.concurrency,
                  "--images-per-request", args.images_per_request,
                  "--seconds", str(args.serve_seconds)]
    return serve_args + (["--images", str(args.images / "test")] if args.images else [])


def _step_args(args, model: str) -> list[str]:
    step_args = ["--model", model, "--device", args.device, "--batch", str(args.step_batch),
                 "--steps", str(args.step_steps), "--rounds", "1"]
    return step_args + (["--images", str(args.images / "train")] if args.images else [])


def _fit_job_steps(args, figures: dict, left_s: float) -> None:
    """Fewer job steps when, at the measured ZSCL step cost, the asked ones would not finish
    within ``left_s`` (start-up and evaluation take about a minute): said in the figures."""
    variants = (figures.get("step") or {}).get("variants", {})
    cost = next((v["s_per_step"] for k, v in variants.items() if k.startswith("zscl")), None)
    if cost is None or cost * args.job_steps <= left_s - 90:
        return
    fitted = max(50, int((left_s - 90) / cost) // 50 * 50)
    if fitted < args.job_steps:
        figures["job_steps_fitted"] = {"asked": args.job_steps, "run": fitted,
                                       "why": f"{cost:.3f} s/step measured; {left_s:.0f} s left"}
        print(f"gpu_check: {args.job_steps} job steps would not fit the budget; running {fitted}",
              flush=True)
        args.job_steps = fitted


def run(argv: list[str] | None = None) -> dict:
    """Run the check's parts (step cost, serving, one job), print the table, and return every
    figure as plain data. A part that fails is recorded with its error and the rest still run;
    the figures so far are printed and written (``--json``) after each part, so a run cut short
    keeps what it measured. With ``--budget-s`` the job's steps are fitted to the time left."""
    args = _parser().parse_args(argv)
    _defaults(args)
    logging.basicConfig(level=logging.WARNING)
    skip = {s for s in args.skip.split(",") if s}
    started = time.monotonic()
    figures: dict = {"model": args.model, "device": args.device, "times_s": {}}
    if args.device.startswith("cuda"):
        import torch
        figures["gpu"] = torch.cuda.get_device_name(args.device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(tmp)
        model = _model_source(args.model, workdir)
        parts = {"step": lambda: step_cost.run(_step_args(args, model)),
                 "serve": lambda: serve_bench.run(_serve_args(args)),
                 "job": lambda: run_job(args, model, workdir)}
        for name, part in parts.items():
            if name in skip:
                continue
            if name == "job" and args.budget_s:
                _fit_job_steps(args, figures, args.budget_s - (time.monotonic() - started))
            begun = time.monotonic()
            try:
                figures[name] = part()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - one part's failure must not
                # hide the others (serve_bench ends a failed start with SystemExit)
                logger.exception("gpu_check: part %s failed", name)
                figures[name] = None
                figures.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            figures["times_s"][name] = time.monotonic() - begun
            figures["elapsed_s"] = time.monotonic() - started
            print_table(figures)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2, default=str))
    return figures


def main(argv: list[str] | None = None) -> int:
    figures = run(argv)
    job = figures.get("job")
    failed = figures.get("errors") or (job is not None and job["state"] not in ("succeeded", "rejected"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dashboard benchmark: the load time of each page with 100 jobs and 50 model versions.

Seeds a fresh store through the records modules (the ones the API and the worker use): the
served model (the tiny test CLIP, real weights), 49 more versions in a lineage tree below it
(registry rows: the pages read records, never weights), 100 finished jobs, each with 50
progress events and a gate report computed by ``zscl_core.evaluate_gate``, three datasets and
two label sets. Then starts a real `zscl serve` and, in headless chromium, opens each page
cold (a new browser context each time: no cache) and reads the page's own ready mark: the time
from navigation start until its API fetches are done and drawn (``window.zsclReady``).

    python -m benchmarks.ui_bench                     # target: every page <= 1 s
    python -m benchmarks.ui_bench --loads 10 --jobs 500
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.serve_bench import PRESETS, free_port, stop_server, wait_ready

logger = logging.getLogger("ui_bench")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PAGES = ("jobs", "job", "models", "datasets", "try")
TARGET_MS = 1000.0
METHODS = ("zscl", "zscl", "zscl", "continual_ft", "lwf", "wise_ft")


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    """`zscl serve` on the seeded store: no worker (every job has ended), no keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSCL_")}
    env.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_PORT": str(port), "ZSCL_START_WORKER": "false",
                "ZSCL_TORCH_THREADS": "1"})
    return subprocess.Popen([sys.executable, "-m", "zscl_cli", "serve", "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _zip(classes: list[str], per_class: int, seed: int, test: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in classes:
            for i in range(per_class):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(png, "PNG")
                zf.writestr(f"{'test/' if test else ''}{name}/{i:03d}.png", png.getvalue())
    return buffer.getvalue()


def _gate_report(rng: random.Random, task, suite, passes: bool) -> tuple[dict, dict]:
    """A gate report as the worker writes it (``zscl_core.evaluate_gate``), from made-up paired
    counts that pass or fail the policy as asked."""
    from zscl_core import GatePolicy, PairedScore, evaluate_gate

    new_before, suite_before = rng.randint(10, 25), rng.randint(30, 60)
    if passes:
        new = PairedScore(task.id, task.name, "new_task", 40, new_before, 0, rng.randint(4, 12))
        kept = PairedScore(suite.id, suite.name, "suite", 80, suite_before, rng.randint(0, 1), 1)
    elif rng.random() < 0.5:  # no real gain on the new task
        new = PairedScore(task.id, task.name, "new_task", 40, new_before, 1, 1)
        kept = PairedScore(suite.id, suite.name, "suite", 80, suite_before, 0, 0)
    else:  # forgetting: the suite drops past max_dataset_drop
        new = PairedScore(task.id, task.name, "new_task", 40, new_before, 0, 10)
        kept = PairedScore(suite.id, suite.name, "suite", 80, suite_before, rng.randint(6, 12), 0)
    report = evaluate_gate(new, [kept], GatePolicy(confidence=0.5), drift=rng.uniform(0, 0.05))
    assert report.passed == passes
    metrics = {"new_task_before": new.before, "new_task_after": new.after,
               "new_task_margin": report.rows[0]["margin"], "mean_drop": report.mean_drop,
               "drift": report.drift}
    return report.to_dict(), metrics


UPLOADS = {"pets": (["cat", "dog", "rabbit", "hamster"], False),
           "stripes": (["horizontal stripes", "vertical stripes"], False),
           "cifar-mini": (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                           "ship", "truck"], True)}
STEPS = 200


def seed_store(settings, n_jobs: int, n_versions: int, tmp: Path) -> dict:
    """The store the pages will read; returns the counts and the newest job (the job page)."""
    from records import db, registry
    from records.datasets import add_dataset
    from records.label_sets import put_label_set
    from service.bootstrap import materialise_model

    settings.ensure_dirs()
    engine = db.make_engine(settings.database_url)
    db.create_all(engine)
    sessions = db.make_session_factory(engine)
    rng = random.Random(0)
    root = materialise_model(settings)
    datasets = {}
    for i, (name, (classes, suite)) in enumerate(UPLOADS.items()):
        path = tmp / f"{name}.zip"
        path.write_bytes(_zip(classes, 8, seed=i, test=suite))
        datasets[name], _ = add_dataset(sessions, settings, path, name=name, suite=suite,
                                        content_type="application/zip", test_fraction=0.25, seed=0)
    with sessions() as session:
        registry.register_version(session, root.name, root, metadata={"source": settings.model})
        registry.activate(session, root.name)
        for name in ("pets", "stripes"):
            put_label_set(session, name, UPLOADS[name][0], source=f"dataset:{datasets[name].id}")
        versions, job_id = [root.name], None
        # n_versions - 1 jobs promote a version, spread over the history; the others are rejected
        promoting = {round(k * n_jobs / (n_versions - 1)) for k in range(n_versions - 1)}
        for i in range(n_jobs):
            parent = versions[-1] if i % 7 else versions[max(0, len(versions) - 3)]  # some branches
            job_id, version = _seed_job(session, settings, rng, i, parent,
                                        datasets["pets" if i % 3 else "stripes"],
                                        datasets["cifar-mini"], passes=i in promoting)
            if version:
                versions.append(version)
    engine.dispose()
    return {"job": job_id, "jobs": n_jobs, "versions": len(versions), "datasets": len(datasets)}


def _seed_job(session, settings, rng: random.Random, index: int, parent: str, task, suite,
              passes: bool) -> tuple[str, str | None]:
    """One finished job through the states the worker moves it through, with 50 progress events;
    a passing one registers its version (a row: no weights). Returns (job id, version or None)."""
    from records import jobs, registry
    from records.tables import JobEvent

    method = METHODS[index % len(METHODS)]
    job, _ = jobs.create_job(session, dataset_id=task.id, method=method,
                             hparams={"steps": STEPS, "batch_size": 16, "lr": 1e-5},
                             gate={"confidence": 0.5})
    jobs.transition(session, job.id, "running", base_version=parent)
    session.add_all(JobEvent(job_id=job.id, kind="progress", data={
        "step": step, "total": STEPS, "eta_s": round((STEPS - step) * 1.2, 1),
        "losses": {"ce": round(2.0 * 0.985 ** step + 0.1, 5),
                   "kd_image": round(0.4 * (1 - 0.99 ** step), 5),
                   "kd_text": round(0.3 * (1 - 0.992 ** step), 5)}})
        for step in range(4, STEPS + 1, 4))
    session.commit()
    jobs.record_progress(session, job.id, step=STEPS, total=STEPS, losses={"ce": 0.2}, eta_s=0.0,
                         event=False)
    jobs.transition(session, job.id, "evaluating")
    report, metrics = _gate_report(rng, task, suite, passes)
    if not passes:
        jobs.transition(session, job.id, "rejected", metrics=metrics, report=report)
        return job.id, None
    version = f"v-{time.strftime('%Y%m%d')}-{index:04d}-{rng.getrandbits(24):06x}"
    registry.register_version(session, version, settings.versions_dir / version, parent=parent,
                              metadata={"source": f"job:{job.id}", "method": method,
                                        "metrics": metrics, "report": report})
    jobs.transition(session, job.id, "succeeded", candidate_version=version, metrics=metrics,
                    report=report)
    return job.id, version


def measure(url: str, routes: dict[str, str], loads: int) -> dict[str, dict]:
    """Per page: the ready times (ms since navigation start) of ``loads`` cold loads."""
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            for name, route in routes.items():
                times, requests = [], []
                for _ in range(loads):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    page = context.new_page()
                    api_calls = []
                    page.on("request", lambda r, calls=api_calls: "/v1/" in r.url and calls.append(r.url))
                    page.goto(f"{url}/ui/#/{route}")
                    page.wait_for_selector(f"body[data-ready='{name}']", timeout=30_000)
                    errors = page.locator("main .error").all_inner_texts()
                    if errors:
                        raise SystemExit(f"page {name} shows an error: {errors}")
                    times.append(page.evaluate("window.zsclReady.ms"))
                    requests.append(len(api_calls))
                    context.close()
                results[name] = {"times_ms": times, "api_requests": max(requests)}
        finally:
            browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5, help="cold loads per page")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    if args.versions > args.jobs + 1:
        raise SystemExit("--versions can be at most --jobs + 1 (each new version comes from a job)")

    from records.settings import Settings

    with tempfile.TemporaryDirectory(prefix="zscl-ui-bench-") as tmp:
        tmp = Path(tmp)
        model = tmp / "tiny-clip.json"
        model.write_text(json.dumps(PRESETS["tiny"]))  # the pages read records; any model loads
        settings = Settings(data_dir=tmp / "data", model=str(model))
        started = time.perf_counter()
        seeded = seed_store(settings, args.jobs, args.versions, tmp)
        print(f"  .. seeded {seeded['jobs']} jobs, {seeded['versions']} versions, "
              f"{seeded['datasets']} datasets in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
        port, log = free_port(), tmp / "server.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_server(settings.data_dir, port, log)
        try:
            wait_ready(url, proc, log)
            routes = {"jobs": "jobs", "job": f"jobs/{seeded['job']}", "models": "models",
                      "datasets": "datasets", "try": "try"}
            results = measure(url, routes, args.loads)
        finally:
            stop_server(proc)

    print(f"dashboard load time, {seeded['jobs']} jobs, {seeded['versions']} versions, "
          f"{seeded['datasets']} datasets; {args.loads} cold loads per page (new browser context "
          f"each); navigation start -> API fetches done and drawn; {os.cpu_count()} CPUs")
    print(f"{'page':<10}{'median ms':>10}{'max ms':>9}{'API calls':>11}  target <= {TARGET_MS:.0f} ms")
    worst = 0.0
    for name in PAGES:
        row = results[name]
        worst = max(worst, max(row["times_ms"]))
        print(f"{name:<10}{statistics.median(row['times_ms']):10.0f}{max(row['times_ms']):9.0f}"
              f"{row['api_requests']:11d}  {'ok' if max(row['times_ms']) <= TARGET_MS else 'SLOW'}")
    if args.json:
        args.json.write_text(json.dumps({"seeded": seeded, "pages": results}, indent=2))
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())

"""``zscl bench updates``: a sequence of update jobs on the product path, method beside method.

What a user's job runs, and nothing else: the datasets are written as zip archives and go through
the service's ingestion (``records.datasets.add_dataset``), each job is a job record with a
user's hyper-parameters (the README tour's ``steps=200, batch_size=16``, every other field at
``UpdateConfig``'s default) and the default gate, and it runs through the worker's
``JobRunner`` from the served version: the full model, every forward pass, no feature caching.
Every (method, reference images) arm starts from the same starter version in a store of its own
and learns the tasks in order; CIFAR-10 test images are registered as a zero-shot suite.

Per job it records the new task's accuracy before and after, every suite's and learned task's
before / after with the gate's noise margin, the drift, the verdict and the seconds per step.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from records.settings import Settings
from zscl_core import read_manifest

from .tasks import LoadOptions, Task, load_task

__all__ = ["UpdatesBenchConfig", "TOUR_HPARAMS", "write_archive", "run_updates", "updates_table",
           "summary_table", "write_outputs"]

logger = logging.getLogger(__name__)

# The worker's default, so that the benchmark runs what a user's job runs unless told otherwise.
DEFAULT_REFERENCE_IMAGES: str = Settings.model_fields["reference_images"].default
# The README tour's job: what a user types; everything else is UpdateConfig's default.
TOUR_HPARAMS: dict = {"steps": 200, "batch_size": 16}


@dataclass(frozen=True)
class UpdatesBenchConfig:
    """One run of the product-path benchmark.

    Attributes:
        tasks: learned in this order (zscl_bench.tasks names or NAME=PATH folders).
        suite: registered as a zero-shot suite (its test images only; never trained on).
        methods: each learns the whole sequence from the starter.
        reference_images: the worker's ``reference_images`` settings to compare (one arm each,
            for the methods that distil; other methods run once).
        train_per_class, test_per_class: uploaded images per class of each task.
        suite_per_class: suite images per class.
        hparams: the job's hyper-parameters, as a user would send them.
    """

    tasks: tuple[str, ...] = ("fashion_mnist", "mnist", "textile")
    suite: str = "cifar10"
    methods: tuple[str, ...] = ("zscl", "continual_ft")
    reference_images: tuple[str, ...] = (DEFAULT_REFERENCE_IMAGES,)
    train_per_class: int = 80
    test_per_class: int = 30
    suite_per_class: int = 50
    hparams: dict = field(default_factory=lambda: dict(TOUR_HPARAMS))
    seed: int = 0


def _png(item) -> bytes:
    buf = io.BytesIO()
    if isinstance(item, Image.Image):
        item.save(buf, format="PNG")
    else:
        with Image.open(item) as image:
            image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_archive(path: Path, splits: dict[str, Sequence[tuple[object, str]]]) -> Path:
    """A zip of ``<split>/<class folder>/<n>.png`` as a user would upload it.

    ``splits`` maps "train" / "test" to (image or path, class name) pairs.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for split, items in splits.items():
            for i, (item, name) in enumerate(items):
                zf.writestr(f"{split}/{name.replace(' ', '_')}/{i:05d}.png", _png(item))
    return path


def _pairs(images) -> list[tuple[object, str]]:
    return [(item, images.classnames[label]) for item, label in zip(images.items, images.labels)]


def prepare_archives(config: UpdatesBenchConfig, out: Path, options: LoadOptions,
                     suite_options: LoadOptions) -> tuple[list[tuple[str, Path]], tuple[str, Path]]:
    """Write each task (train/ + test/) and the suite (a bare test/) as zip archives."""
    out.mkdir(parents=True, exist_ok=True)
    archives = []
    for spec in config.tasks:
        task: Task = load_task(spec, options)
        path = write_archive(out / f"{task.name}.zip",
                             {"train": _pairs(task.train), "test": _pairs(task.test)})
        archives.append((task.name, path))
    suite = load_task(config.suite, suite_options)
    suite_path = write_archive(out / f"{suite.name}-suite.zip", {"test": _pairs(suite.test)})
    return archives, (suite.name, suite_path)


def _arms(config: UpdatesBenchConfig) -> list[tuple[str, str]]:
    from zscl_core import get_method

    arms = []
    for method in config.methods:
        refs = config.reference_images if get_method(method).needs_reference else ("task",)
        arms += [(method, ref) for ref in refs]
    return arms


def run_arm(method: str, reference_images: str, config: UpdatesBenchConfig, starter: Path,
            archives: list[tuple[str, Path]], suite: tuple[str, Path], root: Path,
            on_job: Callable[[dict], None] | None = None) -> list[dict]:
    """Learn every task in order with one method, through the worker pipeline; one row per job."""
    from records import db, jobs, registry
    from records.datasets import add_dataset
    from service.updates import job_settings
    from worker.pipeline import JobRunner

    settings = Settings(data_dir=root, reference_images=reference_images)
    settings.ensure_dirs()
    engine = db.make_engine(settings.database_url)
    db.create_all(engine)
    sessions = db.make_session_factory(engine)
    starter_id = read_manifest(starter)["zscl"]["version"]
    with sessions() as session:
        registry.register_version(session, starter_id, starter)
        registry.activate(session, starter_id)
    add_dataset(sessions, settings, suite[1], name=suite[0], suite=True,
                content_type="application/zip", test_fraction=0.2, seed=0)
    _, hparams = job_settings(method, {**config.hparams, "seed": config.seed}, {})
    runner = JobRunner(settings, sessions, device="cpu")
    rows = []
    for name, archive in archives:
        dataset, _ = add_dataset(sessions, settings, archive, name=name, suite=False,
                                 content_type="application/zip", test_fraction=0.2, seed=0)
        with sessions() as session:
            job, _ = jobs.create_job(session, dataset_id=dataset.id, method=method,
                                     hparams=hparams, gate={})
            job_id = job.id
        started = time.monotonic()
        state = runner.run(job_id)
        with sessions() as session:
            job = jobs.get_job(session, job_id)
            row = {"method": method, "reference_images": reference_images, "task": name,
                   "state": state, "wall_s": round(time.monotonic() - started, 1),
                   "metrics": job.metrics, "report": job.report, "error": job.error}
        rows.append(row)
        if on_job is not None:
            on_job(row)
    engine.dispose()
    return rows


def run_updates(config: UpdatesBenchConfig, starter: Path, out: Path, options: LoadOptions,
                on_job: Callable[[dict], None] | None = None) -> dict:
    """Every arm over the whole sequence; returns the JSON record (also the input of the table)."""
    task_options = LoadOptions(train_per_class=config.train_per_class,
                               test_per_class=config.test_per_class, seed=config.seed,
                               cache_dir=options.cache_dir, shared_data=options.shared_data)
    suite_options = LoadOptions(train_per_class=1, test_per_class=config.suite_per_class,
                                seed=config.seed, cache_dir=options.cache_dir,
                                shared_data=options.shared_data)
    archives, suite = prepare_archives(config, out / "archives", task_options, suite_options)
    arms = {}
    for method, ref in _arms(config):
        logger.info("arm %s / reference_images=%s", method, ref)
        arms[f"{method}/{ref}"] = run_arm(method, ref, config, starter, archives, suite,
                                          out / "stores" / f"{method}-{ref}", on_job)
    return {"config": asdict(config), "starter": str(starter), "arms": arms}


def _fmt(row: dict) -> str:
    sign = "+" if row["delta"] >= 0 else ""
    return (f"{row['before']:.1f} → {row['after']:.1f} ({sign}{row['delta']:.1f} ± "
            f"{row['margin']:.1f})")


def updates_table(record: dict) -> str:
    """One markdown row per job: verdict, new task, suite(s), learned tasks, drift, s/step."""
    lines = ["| method | reference | job | verdict | new task | suites | learned tasks | drift "
             "| s/step | job wall s |", "|---|---|---|---|---|---|---|---:|---:|---:|"]
    for arm in record["arms"].values():
        for row in arm:
            rows = row["report"].get("rows", [])
            if not rows:
                lines.append(f"| {row['method']} | {row['reference_images']} | {row['task']} | "
                             f"{row['state']} ({(row['error'] or {}).get('message', '')}) "
                             f"| | | | | | {row['wall_s']} |")
                continue
            by_kind = {k: [r for r in rows if r["kind"] == k] for k in ("suite", "learned")}
            suites = "<br>".join(f"{r['dataset']} {_fmt(r)}" for r in by_kind["suite"])
            learned = "<br>".join(f"{r['dataset']} {_fmt(r)}" for r in by_kind["learned"]) or "–"
            m = row["metrics"]
            lines.append(f"| {row['method']} | {row['reference_images']} | {row['task']} | "
                         f"{row['state']} | {_fmt(rows[0])} | {suites} | {learned} | "
                         f"{m.get('drift', float('nan')):.3f} | {m.get('s_per_step', '')} | "
                         f"{row['wall_s']} |")
    return "\n".join(lines)


def _final_scores(rows: list[dict]) -> dict[str, float]:
    """Accuracy of the model served after the last job, per dataset it was measured on: the
    last job's 'after' when it was promoted, else its 'before' (the served model stayed)."""
    final: dict[str, float] = {}
    for row in rows:
        for r in row["report"].get("rows", []):
            final[r["dataset"]] = r["after"] if row["state"] == "succeeded" else r["before"]
    return final


def summary_table(record: dict) -> str:
    """One row per arm: promotions, mean gain on the job's own task, what the final served model
    keeps of each suite (vs the starter) and of every learned task, mean seconds per step."""
    suite = record["config"]["suite"]
    lines = ["| method | reference | promoted | mean new-task gain | "
             f"{suite} suite: starter → final | learned tasks, final (mean) | mean s/step |",
             "|---|---|---:|---:|---|---|---:|"]
    for rows in record["arms"].values():
        scored = [r for r in rows if r["report"].get("rows")]
        if not scored:
            continue
        promoted = sum(r["state"] == "succeeded" for r in rows)
        gains = [r["report"]["rows"][0]["delta"] for r in scored]
        starter = next((x["before"] for x in scored[0]["report"]["rows"] if x["kind"] == "suite"),
                       float("nan"))
        final = _final_scores(scored)
        tasks = [r["task"] for r in rows if r["state"] == "succeeded"]
        learned = [final[t] for t in tasks if t in final]
        steps = [r["metrics"]["s_per_step"] for r in scored if "s_per_step" in r["metrics"]]
        learned_text = ", ".join(f"{t} {final[t]:.1f}" for t in tasks if t in final) or "–"
        if learned:
            learned_text += f" ({sum(learned) / len(learned):.1f})"
        lines.append(f"| {rows[0]['method']} | {rows[0]['reference_images']} | {promoted}/{len(rows)} "
                     f"| {sum(gains) / len(gains):+.1f} | {starter:.1f} → {final.get(suite, float('nan')):.1f} "
                     f"| {learned_text} | {sum(steps) / max(1, len(steps)):.2f} |")
    return "\n".join(lines)


def plot_updates(record: dict, path: Path) -> Path:
    """Suite accuracy after each job, and each job's gain on its own task, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    arms = list(record["arms"].items())
    width = 0.8 / max(1, len(arms))
    for a, (label, rows) in enumerate(arms):
        scored = [r for r in rows if r["report"].get("rows")]
        if not scored:
            continue
        suite = [[x for x in r["report"]["rows"] if x["kind"] == "suite"] for r in scored]
        if suite[0]:
            # after a rejected job the served model is unchanged: plot what is served
            served = [suite[0][0]["before"]]
            for r, s in zip(scored, suite):
                served.append(s[0]["after"] if r["state"] == "succeeded" else served[-1])
            line, = left.plot(range(len(served)), served, marker="o", label=label)
            rejected = [(i + 1, s[0]["after"]) for i, (r, s) in enumerate(zip(scored, suite))
                        if r["state"] != "succeeded"]
            if rejected:  # what the gate kept out: the rejected candidate's suite accuracy
                left.scatter(*zip(*rejected), marker="x", color=line.get_color())
        gains = [r["report"]["rows"][0]["delta"] for r in scored]
        xs = [i + a * width for i in range(len(gains))]
        bars = right.bar(xs, gains, width=width, label=label)
        for bar, r in zip(bars, scored):
            if r["state"] != "succeeded":
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    tasks = [r["task"] for r in arms[0][1]] if arms else []
    left.set_xticks(range(len(tasks) + 1), ["starter", *tasks])
    left.set_ylabel(f"{record['config']['suite']} suite accuracy served (%)")
    left.set_title("zero-shot suite served after each job (x: rejected candidate)")
    left.legend(fontsize=8)
    right.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(tasks))], tasks)
    right.set_ylabel("new-task gain (points)")
    right.set_title("gain on the job's own task (hatched: rejected)")
    right.axhline(0, color="black", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(record: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "updates.json").write_text(json.dumps(record, indent=2, default=str))
    (out / "updates.md").write_text(summary_table(record) + "\n\n" + updates_table(record) + "\n")
    return [out / "updates.json", out / "updates.md", plot_updates(record, out / "updates.png")]

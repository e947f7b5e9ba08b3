"""``zscl bench mtil`` and ``zscl bench updates``: the benchmarks from the command line.

This is the edge: it parses arguments; for mtil it loads the model, the tasks and the reference
set, runs :func:`zscl_bench.runner.run_mtil` under a progress bar, and writes the table, JSON and
plots; for updates it runs :func:`zscl_bench.updates.run_updates` and writes its report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import random
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from zscl_core import (LoadedModel, ReferenceSet, ZSCLError, default_reference_texts, load_model,
                       texts_from_file)

from .features import cut_model, memoize_frozen_text, tower_depth
from .plots import write_plots
from .reference import reference_items
from .report import PAPER_NAMES, matrix_table, metrics_table
from .runner import (ALL_METHODS, BenchConfig, MTILResult, PreparedTask, ProgressEvent, prepare_task,
                     run_mtil)
from .runner.mtil import TensorImages
from .tasks import DEFAULT_SEQUENCE, LoadOptions, load_task
from .updates import (TOUR_HPARAMS, UpdatesBenchConfig, run_updates, summary_table, updates_table,
                      write_outputs)

__all__ = ["main", "build_parser", "PRESETS"]

# plain text, printed as it is written (RawDescriptionHelpFormatter): no reStructuredText
DESCRIPTION = """\
Benchmarks of continual learning without forgetting (ZSCL): each compares update
methods on a sequence of image-classification tasks.

  mtil     every method learns the tasks in order from the same model, in this
           process; prints Transfer / Avg. / Last and the accuracy matrices,
           writes results.json and plots
  updates  the same kind of sequence as update jobs, through the service's
           dataset upload and the worker's job runner with the default gate;
           prints one row per job, writes updates.json, updates.md and a plot

'zscl bench mtil --help' and 'zscl bench updates --help' list their options."""

logger = logging.getLogger(__name__)

# Sizes of a run. "default" fits 60 min on 2 CPU cores with the starter model; "quick" 5 min.
PRESETS: dict[str, dict] = {
    "default": {"train_per_class": 50, "test_per_class": 30, "steps": 40, "select_steps": 20,
                "lr_grid": "1e-5,1e-4,1e-3", "batch_size": 32, "ref_batch_size": None,
                "ensemble_every": 10, "reference_count": 256, "reference_text_count": 1000,
                "train_blocks": 1,
                "trainable": "image"},
    "quick": {"train_per_class": 16, "test_per_class": 10, "steps": 10, "select_steps": 5,
              "lr_grid": "1e-4", "batch_size": 16, "ref_batch_size": None,
              "ensemble_every": 5, "reference_count": 32, "reference_text_count": 200,
              "train_blocks": 1,
              "trainable": "image"},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zscl bench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{mtil,updates}",
                                help="the benchmark to run")
    p = sub.add_parser("mtil", help="run the multi-domain task-incremental benchmark",
                       description="Each method learns the tasks in order from the same initial "
                                   "model; prints Transfer / Avg. / Last and the accuracy "
                                   "matrices, writes results.json and PNG plots.")
    p.add_argument("--model", help="any zscl_core.load_model source (open_clip name, config JSON, "
                                   "version directory); default: the starter model")
    p.add_argument("--pretrained", help="pretrained tag or checkpoint path for --model")
    p.add_argument("--task", action="append", dest="tasks", metavar="NAME[=PATH]",
                   help=f"a task, in order; repeat. Built-in: {', '.join(DEFAULT_SEQUENCE)}; "
                        "NAME=PATH reads PATH/train/<class>/* and PATH/test/<class>/*. "
                        f"Default: {' '.join(DEFAULT_SEQUENCE)}")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help="comma-separated, from: " + ", ".join(ALL_METHODS) + " (all)")
    p.add_argument("--quick", action="store_true", help="the 5-minute preset")
    p.add_argument("--train-per-class", type=int, help="train images per class (before val split)")
    p.add_argument("--test-per-class", type=int, help="test images per class")
    p.add_argument("--steps", type=int, help="optimizer steps per task")
    p.add_argument("--lr", type=float, help="one learning rate for all tasks (skips the choice)")
    p.add_argument("--lr-grid", help="comma-separated rates to choose from on validation")
    p.add_argument("--select-steps", type=int, help="steps of each fine-tune of the lr choice")
    p.add_argument("--val-fraction", type=float, default=0.2, help="train share held out (0.2)")
    p.add_argument("--batch-size", type=int, help="task images per optimizer step")
    p.add_argument("--ref-batch-size", type=int,
                   help="reference images per step for the methods that distil (default: "
                        "--batch-size)")
    p.add_argument("--ensemble-every", type=int, help="ZSCL's weight-ensemble period k")
    p.add_argument("--train-blocks", type=int,
                   help="train only the image tower's last N blocks and cache the features of the "
                        "frozen ones (0: train the whole tower on images); every method alike")
    p.add_argument("--trainable",
                   help="all | image | last:N, of the (cut) model, every method alike (presets: "
                        "image, i.e. the text tower stays frozen)")
    p.add_argument("--reference-images", default="photos",
                   help="'photos' (scikit-image sample photos, random crops) or a folder")
    p.add_argument("--reference-count", type=int, help="number of reference images")
    p.add_argument("--reference-texts", help="a file of sentences (default: ImageNet class prompts)")
    p.add_argument("--reference-text-count", type=int,
                   help="use a seeded sample of this many reference texts")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the image sampling, splits and training (0)")
    p.add_argument("--out", type=Path, default=Path("bench-out/mtil"),
                   help="folder for results.json and the plots (bench-out/mtil)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zscl-bench",
                   help="where CIFAR-10 is extracted and the starter model is kept")
    p.add_argument("--shared-data", type=Path, help="folder holding cifar10-subset.tar")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_updates_parser(sub)
    return parser


def _add_updates_parser(sub) -> None:
    defaults = UpdatesBenchConfig()
    p = sub.add_parser("updates", help="a sequence of update jobs through the worker pipeline",
                       description="Each method learns the tasks in order from the starter, "
                                   "through the service's ingestion and the worker's JobRunner "
                                   "with a user's job settings and the default gate; prints one "
                                   "row per job, writes updates.json, updates.md, updates.png.")
    p.add_argument("--task", action="append", dest="tasks", metavar="NAME[=PATH]",
                   help=f"a task, in order; repeat (default: {' '.join(defaults.tasks)})")
    p.add_argument("--suite", default=defaults.suite,
                   help=f"a task registered as the zero-shot suite every gate checks, never "
                        f"trained on ({defaults.suite})")
    p.add_argument("--methods", default=",".join(defaults.methods),
                   help="comma-separated update methods, as 'zscl job create --method' takes "
                        f"them (default: {','.join(defaults.methods)})")
    p.add_argument("--reference-images", default=",".join(defaults.reference_images),
                   help="comma-separated worker settings to compare: task, photos, both")
    p.add_argument("--train-per-class", type=int, default=defaults.train_per_class,
                   help=f"uploaded train images per class of each task ({defaults.train_per_class})")
    p.add_argument("--test-per-class", type=int, default=defaults.test_per_class,
                   help=f"uploaded test images per class of each task ({defaults.test_per_class})")
    p.add_argument("--suite-per-class", type=int, default=defaults.suite_per_class,
                   help=f"images per class of the zero-shot suite ({defaults.suite_per_class})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                   help="a job hyper-parameter, as 'zscl job create --set' takes it (default: "
                        + " ".join(f"{k}={v}" for k, v in defaults.hparams.items()) + ")")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the image sampling and each job's training (0)")
    p.add_argument("--out", type=Path, default=Path("bench-out/updates"),
                   help="folder for updates.json, updates.md and the plot (bench-out/updates)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zscl-bench",
                   help="where CIFAR-10 is extracted and the starter model is kept")
    p.add_argument("--shared-data", type=Path, help="folder holding cifar10-subset.tar")
    p.add_argument("--report", type=Path, metavar="UPDATES_JSON",
                   help="only re-render the tables and the plot of an earlier run into --out")


def _run_updates(args: argparse.Namespace) -> int:
    from zscl_core.starter import ensure_starter

    if args.report:
        record = json.loads(args.report.read_text())
        write_outputs(record, args.out)
        sys.stdout.write(summary_table(record) + "\n\n" + updates_table(record) + "\n")
        return 0

    hparams = {**TOUR_HPARAMS, **dict(args.set)}
    config = UpdatesBenchConfig(
        tasks=tuple(args.tasks or UpdatesBenchConfig().tasks), suite=args.suite,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        reference_images=tuple(r.strip() for r in args.reference_images.split(",") if r.strip()),
        train_per_class=args.train_per_class, test_per_class=args.test_per_class,
        suite_per_class=args.suite_per_class, hparams=hparams, seed=args.seed)
    starter = ensure_starter(args.cache_dir / "starter")
    options = LoadOptions(cache_dir=args.cache_dir, shared_data=args.shared_data)
    started = time.monotonic()

    def on_job(row: dict) -> None:
        m = row["metrics"]
        logger.info("%s/%s %s: %s, new task %.1f -> %.1f, %s s/step, %.0f s", row["method"],
                    row["reference_images"], row["task"], row["state"],
                    m.get("new_task_before", float("nan")), m.get("new_task_after", float("nan")),
                    m.get("s_per_step"), row["wall_s"])

    record = run_updates(config, starter, args.out, options, on_job=on_job)
    record["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "threads": torch.get_num_threads(),
                             "wall_s": round(time.monotonic() - started, 1)}
    paths = write_outputs(record, args.out)
    sys.stdout.write(summary_table(record) + "\n\n" + updates_table(record) + "\n")
    sys.stdout.write(f"wrote {', '.join(str(p) for p in paths)}\n")
    return 0


def _key_value(text: str) -> tuple[str, object]:
    """One ``--set KEY=VALUE``, read as ``zscl job create --set`` reads it: the value as JSON
    (6, 1e-5, true, "x"), else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _resolve(args: argparse.Namespace) -> dict:
    """Preset values, overridden by whatever was given explicitly."""
    values = dict(PRESETS["quick" if args.quick else "default"])
    for key in list(values):
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    return values


def _load_initial(args: argparse.Namespace):
    if args.model:
        return load_model(args.model, pretrained=args.pretrained, device=args.device), args.model
    try:
        from zscl_core.starter import ensure_starter
    except ImportError as exc:
        raise ZSCLError("the starter model (zscl_core.starter) is not available in this checkout; "
                        "pass --model SOURCE (an open_clip name, a config JSON or a version "
                        "directory)") from exc
    path = ensure_starter(args.cache_dir / "starter")
    return load_model(path, device=args.device), str(path)


class _Bar:
    """A tqdm bar over every optimizer step of the run, labelled with method, task and step."""

    def __init__(self, total: int, n_tasks: int, disable: bool):
        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, disable=disable,
                        file=sys.stderr)
        self.n_tasks = n_tasks

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind in ("step", "select") and event.step is not None:
            info = event.step
            self.bar.set_description(f"{event.method} | task {event.task_index + 1}/{self.n_tasks} "
                                     f"{event.task_name} | step {info.step}/{info.total}")
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in info.losses.items()}, refresh=False)
            self.bar.update(1)
        elif event.kind == "eval":
            self.bar.set_description(f"{event.method} | evaluated after {event.task_name}")

    def close(self) -> None:
        self.bar.close()


class _Prepared(NamedTuple):
    """What every method of an mtil run starts from."""

    loaded: LoadedModel  # cut and its text memoised as the run asks
    model_source: str
    tasks: list[PreparedTask]  # in order
    reference: ReferenceSet


def _run(args: argparse.Namespace) -> int:
    values = _resolve(args)
    lr_grid = _floats(values["lr_grid"]) if isinstance(values["lr_grid"], str) else values["lr_grid"]
    config = _bench_config(args, values, lr_grid)
    started = time.perf_counter()
    prepared = _prepare(args, values, config)
    prep_s = time.perf_counter() - started
    result = _train(args, prepared, config, lr_grid)
    wall = time.perf_counter() - started
    _print_tables(result, wall)
    record = _record(args, values, config, lr_grid, prepared, result,
                     {"prepare_s": prep_s, "total_s": wall})
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    plots = write_plots(result.matrices, result.tasks, args.out)
    (args.out / "partial.json").unlink(missing_ok=True)
    sys.stdout.write(f"wrote {args.out / 'results.json'} and {len(plots)} plots in {args.out}\n")
    return 0


def _bench_config(args: argparse.Namespace, values: dict, lr_grid: tuple[float, ...]) -> BenchConfig:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return BenchConfig(
        methods=methods, steps=values["steps"], lr=args.lr, lr_grid=lr_grid,
        select_steps=values["select_steps"], val_fraction=args.val_fraction, seed=args.seed,
        device=args.device,
        update={"batch_size": values["batch_size"], "ref_batch_size": values["ref_batch_size"],
                "ensemble_every": values["ensemble_every"], "trainable": values["trainable"],
                "warmup_steps": max(1, values["steps"] // 10)})


def _prepare(args: argparse.Namespace, values: dict, config: BenchConfig) -> _Prepared:
    """The initial model, the tasks and the reference set, seeded by ``--seed``. A preset's
    ``train_blocks`` is lowered in ``values`` where the tower is shallower."""
    torch.manual_seed(args.seed)
    loaded, model_source = _load_initial(args)
    trunk = None
    depth = tower_depth(loaded.model)
    if values["train_blocks"] and args.train_blocks is None:  # a preset adapts to shallow towers
        values["train_blocks"] = min(values["train_blocks"], max(0, depth - 1))
    if values["train_blocks"]:
        cut, trunk = cut_model(loaded.model, values["train_blocks"])
        loaded = dataclasses.replace(loaded, model=cut)
    if values["trainable"] == "image":  # no method trains text: encode each text once
        loaded = dataclasses.replace(loaded, model=memoize_frozen_text(loaded.model))
    options = LoadOptions(values["train_per_class"], values["test_per_class"], args.seed,
                          args.cache_dir, args.shared_data)
    specs = args.tasks or list(DEFAULT_SEQUENCE)
    tasks = [prepare_task(load_task(spec, options), loaded.preprocess_val, config.val_fraction,
                          args.seed, trunk=trunk, device=args.device) for spec in specs]
    return _Prepared(loaded, model_source, tasks, _reference_set(args, values, loaded, trunk))


def _reference_set(args: argparse.Namespace, values: dict, loaded: LoadedModel, trunk) -> ReferenceSet:
    texts = texts_from_file(args.reference_texts) if args.reference_texts else default_reference_texts()
    if values["reference_text_count"] and values["reference_text_count"] < len(texts):
        texts = sorted(random.Random(args.seed).sample(list(texts), values["reference_text_count"]))
    ref_items = reference_items(args.reference_images, values["reference_count"], args.seed)
    return ReferenceSet(TensorImages.from_items(ref_items, loaded.preprocess_val, trunk=trunk,
                                                device=args.device), texts)


def _train(args: argparse.Namespace, prepared: _Prepared, config: BenchConfig,
           lr_grid: tuple[float, ...]) -> MTILResult:
    """Every method through the tasks under one progress bar; the matrices finished so far are
    kept in ``--out``/partial.json, so that a run cut short leaves them behind."""
    tasks = prepared.tasks
    n_select = 0 if (args.lr is not None or len(lr_grid) == 1) else len(lr_grid) * len(tasks)
    total = config.steps * len(tasks) * len(config.trained_methods) + config.select_steps * n_select
    bar = _Bar(total, len(tasks), args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    partial: dict[str, list[list[float]]] = {}

    def save_partial(method: str, matrix: list[list[float]]) -> None:
        partial[method] = matrix
        (args.out / "partial.json").write_text(json.dumps(
            {"tasks": [p.name for p in tasks], "matrices": partial}, indent=1))

    try:
        with logging_redirect_tqdm():
            return run_mtil(prepared.loaded, tasks, config, reference=prepared.reference, on_event=bar,
                            on_matrix=save_partial)
    finally:
        bar.close()


def _print_tables(result: MTILResult, wall: float) -> None:
    out = sys.stdout
    out.write("\n## Transfer / Avg. / Last (%)\n\n" + metrics_table(result.metrics) + "\n")
    for method, matrix in result.matrices.items():
        out.write(f"\n### {PAPER_NAMES.get(method, method)}: accuracy matrix (%)\n\n"
                  + matrix_table(matrix, result.tasks) + "\n")
    out.write(f"\nlearning rates (chosen on validation): {result.learning_rates}\n")
    out.write(f"wall time: {wall / 60:.1f} min\n")


def _record(args: argparse.Namespace, values: dict, config: BenchConfig, lr_grid: tuple[float, ...],
            prepared: _Prepared, result: MTILResult, timing: dict[str, float]) -> dict:
    """results.json: the command, the settings, the tasks and every figure of the run."""
    return {
        "command": "zscl bench " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "model": prepared.model_source,
        "config": {**config.to_dict(), **values, "lr_grid": list(lr_grid),
                   "reference_images": args.reference_images,
                   "reference_texts": args.reference_texts or "ImageNet-1k class names, "
                                                               "'a photo of a {}.'",
                   "reference_text_count": len(prepared.reference.texts)},
        "tasks": [p.task.summary() | {"train_used": len(p.train), "val": len(p.val)}
                  for p in prepared.tasks],
        "matrices": result.matrices,
        "metrics": result.metrics,
        "learning_rates": result.learning_rates,
        "lr_selection_val_accuracy": result.selection,
        "timing": {**result.timing, **timing},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "device": args.device},
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``main(["mtil", "--quick"])``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run_updates(args) if args.command == "updates" else _run(args)
    except (ZSCLError, ValueError) as exc:
        logger.error("%s", exc)
        return 2

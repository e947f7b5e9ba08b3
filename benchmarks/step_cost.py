"""Cost of one ZSCL training step against one Continual-FT step, on the path a job takes.

    python -m benchmarks.step_cost [--model ViT-B-32] [--device cpu|cuda] [--batch 16]
                                   [--steps 3] [--rounds 3] [--images DIR] [--workers N]

Each variant runs ``zscl_core.run_update`` as the worker runs it: JPEG files decoded and
augmented by the job's transforms (``preprocess_train`` for the task, ``preprocess_val`` for
the reference crops of scikit-image's photos, the worker's default reference set) in the
product's number of DataLoader processes for the device (``Settings.loader_workers``; override
with ``--workers``), bf16 autocast and fused AdamW on CUDA, losses read back only when reported.
It runs ``2 x --steps`` steps and times the second half (the first half is set-up and warm-up:
by then the teacher's features of every reference crop are cached, as in a long job), syncing
with the device at both ends. Per variant it prints seconds per step, the share of the whole
run the training thread waited for data, and the ratio to Continual-FT (per round, then the
median). Random weights are fine: the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zscl_core.runtime import tune_process
from records.settings import Settings
from zscl_core import (LabelledImages, ReferenceSet, UnlabelledImages, UpdateConfig,
                       default_reference_texts, encode_texts, load_model, run_update,
                       scan_image_folder)
from zscl_core.reference import photo_crops

__all__ = ["run", "main"]


def write_jpegs(root: Path, classes: int, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """A class-folder tree of small JPEGs (CIFAR-10's size by default): smooth colour fields with
    a per-class tint, so that decoding costs what a real photo of that size costs."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        tint = rng.integers(0, 255, 3)
        for i in range(per_class):
            coarse = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
            arr = (np.asarray(image) * 0.6 + tint * 0.4).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"{i}.jpg", quality=90)
    return root


def _timed(loaded, task: LabelledImages, config: UpdateConfig, window: int, *, device: str,
           workers: int, **kwargs) -> tuple[float, float]:
    """(seconds per step over the last ``window`` steps, data wait share of the whole run)."""
    stamps: list[float] = []
    result = run_update(loaded.model, loaded.tokenizer, task, list(task.classnames), config=config,
                        device=device, num_workers=workers, report_every=window,
                        on_step=lambda info: stamps.append(time.perf_counter()), **kwargs)
    busy = result.data_wait_s + result.compute_s
    return (stamps[-1] - stamps[-2]) / window, result.data_wait_s / busy if busy else 0.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="ZSCL_MODEL-style source: an open_clip "
                        "name (random weights), a config JSON or a version dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16, help="task batch (the paper: 64)")
    parser.add_argument("--ref-batch", type=int, default=0, help="reference batch (0: = --batch)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (after as many "
                        "warm-up steps)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--images", type=Path, help="a class-folder tree of images for the task "
                        "(e.g. CIFAR-10's train split); default: generated 32 px JPEGs")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader processes "
                        "(default: the worker's, Settings.loader_workers for the device)")
    parser.add_argument("--ref-texts", type=int, default=100,
                        help="reference texts (of the 1,000 default ones) encoded by the teacher")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-tune-malloc", dest="tune_malloc", action="store_false",
                        help="leave glibc's malloc at its defaults (the worker keeps freed "
                             "memory, zscl_core.runtime; ZSCL_TUNE_MALLOC=false turns that off)")
    return parser


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, and return its figures as plain data."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tune_process(torch_threads=args.threads or None, tune_malloc=args.tune_malloc)  # as the worker
    workers = (args.workers if args.workers is not None
               else Settings(device=args.device, data_workers=None).loader_workers)
    torch.manual_seed(0)
    loaded = load_model(args.model, device=args.device)
    initial = load_model(args.model, device=args.device).model
    ref_batch = args.ref_batch or args.batch
    with tempfile.TemporaryDirectory(prefix="step-cost-") as tmp:
        root = args.images or write_jpegs(Path(tmp), args.classes, max(8, 2 * args.batch
                                                                       // args.classes + 1))
        task = scan_image_folder(root, loaded.preprocess_train)
        texts = default_reference_texts()[: args.ref_texts]
        # as many crops as the warm-up steps see: the timed steps find every one cached
        crops = photo_crops(ref_batch * args.steps, seed=0)
        reference = ReferenceSet(UnlabelledImages(crops, loaded.preprocess_val), texts,
                                 encode_texts(initial, loaded.tokenizer, texts, device=args.device))
        base = dict(steps=2 * args.steps, batch_size=args.batch, warmup_steps=0, lr=1e-5)
        variants = {"continual_ft": (UpdateConfig(method="continual_ft", **base), {}),
                    f"zscl ref_batch={ref_batch}": (
                        UpdateConfig(method="zscl", ref_batch_size=ref_batch, **base),
                        dict(initial=initial, reference=reference))}
        print(f"model {args.model}, batch {args.batch}, {len(task)} task images "
              f"({'from ' + str(args.images) if args.images else 'generated 32 px JPEGs'}), "
              f"{len(crops)} reference crops, device {args.device}, {workers} loader processes, "
              f"torch threads {torch.get_num_threads()}; {args.steps} timed steps after "
              f"{args.steps} warm-up, {args.rounds} interleaved rounds", flush=True)
        times: dict[str, list[float]] = {name: [] for name in variants}
        waits: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (config, kwargs) in variants.items():
                seconds, wait = _timed(loaded, task, config, args.steps, device=args.device,
                                       workers=workers, **kwargs)
                times[name].append(seconds)
                waits[name].append(wait)
    cft = times["continual_ft"]
    figures: dict = {"model": args.model, "device": args.device, "batch": args.batch,
                     "ref_batch": ref_batch, "workers": workers, "variants": {}}
    for name in variants:
        ratio = statistics.median(t / c for t, c in zip(times[name], cft))
        figures["variants"][name] = {"s_per_step": statistics.median(times[name]),
                                     "data_wait_share": statistics.median(waits[name]),
                                     "ratio_to_continual_ft": ratio}
        print(f"{name:<28} {statistics.median(times[name]):8.4f} s/step   {ratio:4.2f}x   "
              f"data wait {100 * statistics.median(waits[name]):4.1f}% of the run")
    started = time.perf_counter()
    encode_texts(initial, loaded.tokenizer, texts, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    text_cost = time.perf_counter() - started
    cft_s = statistics.median(cft)
    label = f"re-encoding {len(texts)} reference texts"
    print(f"{label:<28} {text_cost:8.4f} s        +{text_cost / cft_s:4.2f}x per step if done on "
          f"every step, as the reference code does (it grows with the number of texts)")
    figures["reencode_texts_s"] = text_cost
    return figures


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

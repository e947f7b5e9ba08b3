"""Cost of one ZSCL training step relative to one Continual-FT step, same model and batch.

    python -m benchmarks.step_cost [--model ViT-B-32] [--batch 16] [--steps 3] [--rounds 3]

Times optimizer steps inside zscl_core.run_update (through its on_step hook; the first step,
which includes set-up, is dropped) for Continual-FT and for ZSCL with
- the reference batch as large as the task batch (the paper's 64/64) or half of it;
- a warm teacher cache (reference images seen before: teacher image features are reused) or a
  cold one (every reference image new, so the frozen teacher runs on every step).
It also times what the reference implementation adds on top: re-encoding the reference texts on
every step (here: ``--ref-texts`` of the 1,000 default texts through the teacher, once).
Random weights are fine: the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from torch.utils.data import Dataset

from records.runtime import tune_process
from zscl_core import (ReferenceSet, UpdateConfig, default_reference_texts, encode_texts, load_model,
                       run_update)


class _RandomImages(Dataset):
    """Deterministic random images; yields (image, label) or (image, index)."""

    def __init__(self, n: int, size: int, classes: int | None = None):
        self.n, self.size, self.classes = n, size, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        image = torch.randn(3, self.size, self.size, generator=g)
        return image, (i % self.classes if self.classes else i)


def _median_step_seconds(loaded, task, names, config, **kwargs) -> float:
    stamps = []
    run_update(loaded.model, loaded.tokenizer, task, names, config=config,
               on_step=lambda info: stamps.append(time.perf_counter()), **kwargs)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (+ 1 warm-up) per run")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--ref-texts", type=int, default=100,
                        help="reference texts (of the 1,000 default ones) encoded by the teacher")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-tune-malloc", dest="tune_malloc", action="store_false",
                        help="leave glibc's malloc at its defaults (the worker keeps freed "
                             "memory, records.runtime; ZSCL_TUNE_MALLOC=false turns that off)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tune_process(torch_threads=args.threads or None, tune_malloc=args.tune_malloc)  # as the worker
    torch.manual_seed(0)
    loaded = load_model(args.model, device=args.device)
    initial = load_model(args.model, device=args.device).model
    size = loaded.spec["preprocess_cfg"].get("size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    names = [f"class {i}" for i in range(args.classes)]
    task = _RandomImages(args.batch * (args.steps + 1), size, args.classes)
    # the teacher encodes the reference texts once per update (set-up, not a step), so the
    # step timings do not depend on how many there are; fewer keep the set-up short
    texts = default_reference_texts()[: args.ref_texts]
    base = dict(steps=args.steps + 1, batch_size=args.batch, warmup_steps=0, lr=1e-5)

    variants = [("continual_ft", None, None)]
    for ref_batch in (args.batch, max(1, args.batch // 2)):
        variants += [(f"zscl ref_batch={ref_batch} teacher cache {cache}", ref_batch, cache)
                     for cache in ("warm", "cold")]
    print(f"model {args.model}, {size}px, batch {args.batch}, "
          f"{args.classes} classes, {len(texts)} reference texts, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, malloc tuned {args.tune_malloc}; median of {args.steps} steps per run, "
          f"{args.rounds} interleaved rounds (ratios are per round, then the median)")
    times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for _ in range(args.rounds):
        for label, ref_batch, cache in variants:
            if ref_batch is None:
                config = UpdateConfig(method="continual_ft", **base)
                times[label].append(_median_step_seconds(loaded, task, names, config))
                continue
            n_ref = ref_batch if cache == "warm" else ref_batch * (args.steps + 1)
            reference = ReferenceSet(_RandomImages(n_ref, size), texts)
            config = UpdateConfig(method="zscl", ref_batch_size=ref_batch, **base)
            times[label].append(_median_step_seconds(loaded, task, names, config,
                                                     initial=initial, reference=reference))
    cft = times["continual_ft"]
    for label, _, _ in variants:
        ratio = statistics.median(t / c for t, c in zip(times[label], cft))
        print(f"{label:<40} {statistics.median(times[label]):8.3f} s/step   {ratio:4.2f}x")
    cft = statistics.median(cft)
    start = time.perf_counter()
    encode_texts(initial, loaded.tokenizer, texts, device=args.device)
    text_cost = time.perf_counter() - start
    label = f"re-encoding {len(texts)} reference texts"
    print(f"{label:<40} {text_cost:8.3f} s        +{text_cost / cft:4.2f}x per step if done on "
          f"every step, as the reference code does (it grows with the number of texts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

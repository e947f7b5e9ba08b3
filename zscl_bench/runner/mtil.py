"""The MTIL protocol of the ZSCL paper (Zheng et al., ICCV 2023, Sec. 4.1) over several methods.

For every method the same initial model learns the tasks in order; the result of task t (what
:func:`zscl_core.run_update` returns) is the start of task t + 1, and ZSCL's teacher is always
the initial model. After each stage every task's test split is evaluated with a template-averaged
zero-shot head built by the current model's own text tower, giving the accuracy matrix A
((n + 1) x n, row 0 the initial model); Transfer / Avg. / Last come from
:func:`zscl_core.summarize`.

Hyper-parameters are chosen on a validation split carved from each task's train split, never on
a test split: for each task, the learning rate of the grid with which a plain fine-tune of the
initial model reaches the best validation accuracy; that rate is then used by every method on
that task (the paper likewise uses one rate per dataset for all methods).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from zscl_core import (METHODS, LoadedModel, ReferenceSet, StepInfo, UpdateConfig, accuracy,
                       build_head, run_update, summarize)

from ..tasks import Task

__all__ = ["ALL_METHODS", "BenchConfig", "MTILResult", "ProgressEvent", "PreparedTask",
           "TensorImages", "prepare_task", "run_mtil"]

logger = logging.getLogger(__name__)

ZERO_SHOT = "zero_shot"
ALL_METHODS: tuple[str, ...] = (ZERO_SHOT, "continual_ft", "lwf", "wise_ft", "zscl", "zscl_no_avg",
                                "zscl_no_distill")


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run, applied alike to every method.

    Attributes:
        methods: which methods to run (``zero_shot`` or a :data:`zscl_core.METHODS` key).
        steps: optimizer steps per task.
        lr: learning rate for every task; None chooses it per task from ``lr_grid`` on validation.
        lr_grid: candidate rates for the validation-based choice.
        select_steps: steps of each fine-tune of the choice.
        val_fraction: share of each class's train images held out for the choice.
        update: further :class:`zscl_core.UpdateConfig` fields (batch_size, trainable, ...).
        seed: seeds training and the validation split.
        device: where to train and evaluate.
        eval_batch_size: images per evaluation forward pass.
    """

    methods: tuple[str, ...] = ALL_METHODS
    steps: int = 100
    lr: float | None = None
    lr_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3)
    select_steps: int = 50
    val_fraction: float = 0.2
    update: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m != ZERO_SHOT and m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(ALL_METHODS)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr is None and not self.lr_grid:
            raise ValueError("give a learning rate or a non-empty lr_grid to choose it from")

    def update_config(self, method: str, lr: float, steps: int | None = None) -> UpdateConfig:
        values = {"steps": self.steps if steps is None else steps, "seed": self.seed,
                  **self.update, "method": method, "lr": lr}
        if values.get("warmup_steps", 0) >= values["steps"]:
            values["warmup_steps"] = values["steps"] // 10
        return UpdateConfig.from_dict(values)

    @property
    def trained_methods(self) -> list[str]:
        return [m for m in self.methods if m != ZERO_SHOT]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TensorImages(Dataset):
    """Images preprocessed once (stored as float16), yielding ``(tensor, label or index)``.

    Preprocessing every image once with the model's deterministic eval transform (and, when the
    image tower is cut, through its frozen trunk: :mod:`zscl_bench.features`), instead of
    decoding and transforming it at every step, is what makes the CPU budget; it applies alike to
    every method (no random augmentation for anyone).
    """

    def __init__(self, images: torch.Tensor, targets: Sequence[int] | None = None):
        self.images = images
        self.targets = (torch.arange(len(images)) if targets is None
                        else torch.as_tensor(list(targets), dtype=torch.long))

    @classmethod
    def from_items(cls, items: Sequence, transform: Callable, targets: Sequence[int] | None = None,
                   *, trunk: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   device: str | torch.device = "cpu", batch_size: int = 128) -> "TensorImages":
        """Preprocess ``items`` (PIL images or paths); with ``trunk``, store its features instead."""
        from PIL import Image

        def load(item):
            if isinstance(item, Image.Image):
                return transform(item.convert("RGB"))
            with Image.open(item) as img:
                return transform(img.convert("RGB"))

        parts = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([load(item) for item in items[start:start + batch_size]])
            if trunk is not None:
                batch = trunk(batch.to(device)).cpu()
            parts.append(batch.to(torch.float16))
        return cls(torch.cat(parts), targets)

    def subset(self, indices: Sequence[int]) -> "TensorImages":
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return TensorImages(self.images[index], self.targets[index].tolist())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float(), int(self.targets[i])


@dataclass
class PreparedTask:
    """A task with its splits preprocessed: train (for updates), val (for choices), test."""

    task: Task
    train: TensorImages
    val: TensorImages
    test: TensorImages

    @property
    def name(self) -> str:
        return self.task.name


def _carve(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Class-stratified (train, val) indices; each class keeps at least one image on each side."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        where = rng.permutation(np.flatnonzero(labels == label))
        cut = min(len(where) - 1, max(1, int(round(len(where) * fraction))))
        val.extend(where[:cut].tolist())
        train.extend(where[cut:].tolist())
    return sorted(train), sorted(val)


def prepare_task(task: Task, transform: Callable, val_fraction: float, seed: int, *,
                 trunk: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 device: str | torch.device = "cpu") -> PreparedTask:
    """Preprocess a task once (through ``trunk`` when the image tower is cut) and carve val."""
    full = TensorImages.from_items(task.train.items, transform, task.train.labels, trunk=trunk,
                                   device=device)
    train_idx, val_idx = _carve(task.train.labels, val_fraction, seed)
    test = TensorImages.from_items(task.test.items, transform, task.test.labels, trunk=trunk,
                                   device=device)
    return PreparedTask(task, full.subset(train_idx), full.subset(val_idx), test)


@dataclass(frozen=True)
class ProgressEvent:
    """What the runner reports: a training step, or the end of an evaluation."""

    kind: str  # "step" | "eval" | "select"
    method: str
    task_index: int
    task_name: str
    step: StepInfo | None = None


@dataclass
class MTILResult:
    """Accuracy matrices, metrics, the learning-rate choice and timings of one run."""

    tasks: list[str]
    matrices: dict[str, list[list[float]]]
    metrics: dict[str, dict[str, float]]
    learning_rates: dict[str, float]
    selection: dict[str, dict[str, float]]
    timing: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_frozen(config: BenchConfig) -> bool:
    return config.update.get("trainable", "all") == "image"


def _evaluate(model: nn.Module, loaded: LoadedModel, tasks: Sequence[PreparedTask], split: str,
              config: BenchConfig, heads: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Accuracy on each task's ``split`` with heads of ``model``'s own text tower.

    ``heads``: a cache by task name, valid only while no method trains the text tower
    (``trainable="image"``), when every model's heads equal the initial model's.
    """
    model.eval()
    row = []
    with torch.no_grad():
        for prepared in tasks:
            head = heads.get(prepared.name) if heads is not None else None
            if head is None:
                head = build_head(model, loaded.tokenizer, prepared.task.classnames,
                                  prepared.task.templates, device=config.device)
                if heads is not None:
                    heads[prepared.name] = head
            row.append(accuracy(model, head, getattr(prepared, split), device=config.device,
                                batch_size=config.eval_batch_size))
    return row


def _update(model: nn.Module, loaded: LoadedModel, prepared: PreparedTask, update: UpdateConfig,
            initial: nn.Module, reference: ReferenceSet | None, config: BenchConfig,
            report: Callable[[StepInfo], None] | None) -> nn.Module:
    result = run_update(model, loaded.tokenizer, prepared.train, prepared.task.classnames,
                        config=update, initial=initial, reference=reference,
                        template=prepared.task.templates[0], device=config.device, on_step=report)
    model.load_state_dict(result.state_dict)
    model.eval()
    return model


def _reporter(on_event: Callable[[ProgressEvent], None] | None, kind: str, method: str,
              index: int, name: str) -> Callable[[StepInfo], None] | None:
    """The ``on_step`` callback of one update, forwarding to ``on_event`` (None: no callback)."""
    if on_event is None:
        return None
    return lambda info: on_event(ProgressEvent(kind, method, index, name, info))


def choose_learning_rates(loaded: LoadedModel, tasks: Sequence[PreparedTask], config: BenchConfig,
                          on_event: Callable[[ProgressEvent], None] | None = None
                          ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per task, the rate of the grid whose fine-tune of the initial model is best on validation."""
    if config.lr is not None:
        return {p.name: config.lr for p in tasks}, {}
    if len(config.lr_grid) == 1:
        return {p.name: config.lr_grid[0] for p in tasks}, {}
    chosen, table = {}, {}
    for index, prepared in enumerate(tasks):
        scores = {}
        for lr in config.lr_grid:
            report = _reporter(on_event, "select", "lr-choice", index, prepared.name)
            update = config.update_config("continual_ft", lr, config.select_steps)
            model = _update(copy.deepcopy(loaded.model), loaded, prepared, update, loaded.model,
                            None, config, report)
            scores[repr(lr)] = _evaluate(model, loaded, [prepared], "val", config)[0]
        best = max(config.lr_grid, key=lambda lr: (scores[repr(lr)], -lr))  # ties: the smaller
        chosen[prepared.name], table[prepared.name] = best, scores
        logger.info("task %s: validation accuracy by lr %s -> lr %g", prepared.name, scores, best)
    return chosen, table


def run_mtil(loaded: LoadedModel, tasks: Sequence[PreparedTask], config: BenchConfig, *,
             reference: ReferenceSet | None = None,
             on_event: Callable[[ProgressEvent], None] | None = None,
             on_matrix: Callable[[str, list[list[float]]], None] | None = None) -> MTILResult:
    """Run every method of ``config`` over ``tasks`` in order and return the accuracy matrices.

    Args:
        loaded: the initial model (never modified) with its tokenizer.
        tasks: the sequence, preprocessed (:func:`prepare_task`).
        config: the benchmark settings.
        reference: reference images and texts for ZSCL's distillation (needed by zscl and
            zscl_no_avg).
        on_event: progress callback (one event per optimizer step and per evaluation).
        on_matrix: called with each method's finished matrix (e.g. to save partial results).
    """
    if len(tasks) < 2:
        raise ValueError("the MTIL protocol needs at least two tasks")
    initial = loaded.model.to(config.device).eval()
    for p in initial.parameters():
        p.requires_grad_(False)
    timing: dict[str, float] = {}

    start = time.perf_counter()
    learning_rates, selection = choose_learning_rates(loaded, tasks, config, on_event)
    timing["lr_choice_s"] = time.perf_counter() - start

    heads: dict[str, torch.Tensor] | None = {} if _text_frozen(config) else None
    start = time.perf_counter()
    row0 = _evaluate(initial, loaded, tasks, "test", config, heads)
    timing["eval_initial_s"] = time.perf_counter() - start
    if on_event is not None:
        on_event(ProgressEvent("eval", "initial", 0, "all"))

    matrices: dict[str, list[list[float]]] = {}
    for method in config.methods:
        start = time.perf_counter()
        if method == ZERO_SHOT:
            matrices[method] = [list(row0) for _ in range(len(tasks) + 1)]
            timing[f"{method}_s"] = time.perf_counter() - start
            if on_matrix is not None:
                on_matrix(method, matrices[method])
            continue
        model = copy.deepcopy(initial)
        matrix = [list(row0)]
        for index, prepared in enumerate(tasks):
            report = _reporter(on_event, "step", method, index, prepared.name)
            update = config.update_config(method, learning_rates[prepared.name])
            model = _update(model, loaded, prepared, update, initial, reference, config, report)
            matrix.append(_evaluate(model, loaded, tasks, "test", config, heads))
            if on_event is not None:
                on_event(ProgressEvent("eval", method, index, prepared.name))
            logger.info("%s after %s: %s", method, prepared.name,
                        " ".join(f"{a:.1f}" for a in matrix[-1]))
        matrices[method] = matrix
        timing[f"{method}_s"] = time.perf_counter() - start
        del model
        if on_matrix is not None:
            on_matrix(method, matrix)
    metrics = {method: summarize(matrix) for method, matrix in matrices.items()}
    return MTILResult([p.name for p in tasks], matrices, metrics, learning_rates, selection, timing)

"""One continual update: the single training loop every method shares.

Loss of a step (ZSCL, Zheng et al., ICCV 2023, Eq. 4-6):

    L = CE_ls(s * cos(f(x), g(prompts(C_t))), y)              task loss, label smoothing
      + w_img * KD(L_student, L_teacher)                       image side, over reference texts
      + w_txt * KD(L_student^T, L_teacher^T)                   text side, over reference images
      + lambda * sum (theta - theta_start)^2                   optional weight constraint

(the weight constraint's gradient is added directly, 2 * lambda * (theta - theta_start), rather
than through autograd).

with L_* = s * cos(image features of x_r, teacher text embeddings of R). The teacher's reference
text embeddings never change during an update, so they are encoded once; the teacher's features
of the (deterministically preprocessed) reference images are cached by index the first time they
are seen. Every ``ensemble_every`` steps the weights are folded into a running uniform mean
(Sec. 3.3); that mean is the update's result.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .averaging import interpolate, running_mean
from .config import UpdateConfig
from .data import stack_batch
from .errors import ConfigError, DatasetError, UpdateCancelled
from .heads import encode_texts
from .losses import feature_distillation, scaled_cosine_logits
from .methods import Method, get_method
from .reference import ReferenceSet

__all__ = ["StepInfo", "UpdateResult", "run_update", "trainable_parameters", "freeze_norm_stats_"]

logger = logging.getLogger(__name__)

_FROZEN = ("logit_scale", "logit_bias")


@dataclass(frozen=True)
class StepInfo:
    """What the loop reports after each optimizer step."""

    step: int
    total: int
    losses: dict[str, float]
    lr: float


@dataclass
class UpdateResult:
    """The outcome of an update.

    Attributes:
        state_dict: the weights to serve next (the ensemble for ZSCL, the interpolation for
            WiSE-FT, the fine-tuned weights otherwise), on the CPU.
        steps: optimizer steps run.
        snapshots: how many states the weight ensemble averaged (1 = the start only).
        last_losses: the loss parts of the final step.
        data_wait_s: seconds the training thread waited for batches (decoding and augmenting
            images, in ``num_workers`` processes or on this thread).
        compute_s: the rest of the optimizer loop's wall time (the device's work, as seen by
            the host: the loop syncs with the device only when it reports).
    """

    state_dict: dict[str, torch.Tensor]
    steps: int
    snapshots: int = 0
    last_losses: dict[str, float] = field(default_factory=dict)
    data_wait_s: float = 0.0
    compute_s: float = 0.0


def trainable_parameters(model: nn.Module, trainable: str) -> dict[str, nn.Parameter]:
    """Select (and unfreeze) the parameters an update trains; the logit scale never trains.

    ``trainable``: "all", "image" (image tower only) or "last:N" (the last N blocks / groups of
    each tower, through open_clip's own tower locking).
    """
    if trainable.startswith("last:"):
        n = int(trainable.split(":", 1)[1])
        for p in model.parameters():
            p.requires_grad_(True)
        model.lock_image_tower(unlocked_groups=n)
        try:
            model.lock_text_tower(unlocked_layers=n)
        except KeyError:  # open_clip's table of HF text towers lacks BERT's layer names
            _lock_hf_text_tower(model.text, n)
        chosen = {k: p for k, p in model.named_parameters() if p.requires_grad}
    elif trainable == "image":
        chosen = {k: p for k, p in model.named_parameters() if k.startswith("visual.")}
    elif trainable == "all":
        chosen = dict(model.named_parameters())
    else:
        raise ConfigError(f"trainable must be 'all', 'image' or 'last:N', got {trainable!r}")
    chosen = {k: p for k, p in chosen.items() if k.split(".")[-1] not in _FROZEN}
    for name, p in model.named_parameters():
        p.requires_grad_(name in chosen)
    if not chosen:
        raise ConfigError(f"trainable={trainable!r} selects no parameter of this model")
    return chosen


def freeze_norm_stats_(model: nn.Module) -> int:
    """Put every normalisation layer that tracks running statistics in eval mode, in place.

    Their affine weights still train; only the running mean / variance (and the batch counter)
    stop moving, and the forward pass normalises with them instead of the batch's statistics.
    Returns how many layers were frozen. ``model.train()`` undoes it.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            module.eval()
            frozen += 1
    return frozen


def _lock_hf_text_tower(text: nn.Module, unlocked_layers: int) -> None:
    """Freeze a Hugging Face text tower except its last ``unlocked_layers`` encoder layers."""
    transformer = getattr(text, "transformer", None)
    encoder = getattr(transformer, "encoder", transformer)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise ConfigError("trainable='last:N' cannot find this text tower's layers; use "
                          "trainable='all' or 'image'")
    for p in transformer.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[-unlocked_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)


@torch.no_grad()
def _add_weight_constraint_grad_(params: dict[str, nn.Parameter], anchor: dict[str, torch.Tensor],
                                 weight: float) -> torch.Tensor:
    """Add the gradient of ``weight * sum (theta - anchor)^2`` to each parameter's grad, in place.

    Equivalent to putting :func:`l2_weight_constraint` in the loss (tested), without building an
    autograd graph over every parameter: one fused pass instead of a forward and a backward.
    Returns the value of the term, for reporting.
    """
    names = [k for k, p in params.items() if p.grad is not None]
    if not names:
        return torch.zeros(())
    diffs = torch._foreach_sub([params[k] for k in names], [anchor[k] for k in names])
    torch._foreach_add_([params[k].grad for k in names], diffs, alpha=2.0 * weight)
    return weight * torch.stack(torch._foreach_norm(diffs)).pow(2).sum()


def _cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class _TeacherImageCache:
    """Teacher image features of reference images, computed the first time each index is seen.

    Which indices are filled is kept on the host and read from the batch's host-side index, so
    that checking costs no device sync."""

    def __init__(self, teacher: nn.Module, size: int):
        self.teacher = teacher
        self.features: torch.Tensor | None = None
        self.filled = torch.zeros(size, dtype=torch.bool)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, index: torch.Tensor, host_index: torch.Tensor
                 ) -> torch.Tensor:
        missing = (~self.filled[host_index]).nonzero().squeeze(1)
        if len(missing):
            feats = self.teacher.encode_image(
                images[missing.to(images.device, non_blocking=True)]).float()
            if self.features is None:
                self.features = torch.zeros(len(self.filled), feats.shape[-1], device=feats.device)
            self.features[index[missing.to(index.device, non_blocking=True)]] = feats
            self.filled[host_index[missing]] = True
        return self.features[index]


class _EpochBatches(Sampler):
    """Batch indices forever: each epoch a fresh permutation of the dataset, cut into full
    batches (the incomplete last one dropped).

    These are exactly the batches that re-iterating ``DataLoader(shuffle=True, drop_last=True,
    generator=torch.Generator().manual_seed(seed))`` gives epoch after epoch (it draws, per
    epoch, a seed for its workers, the permutation, and one more permutation as its sampler ends;
    the same draws are made here), so a job sees the same images in the same order as before.
    One endless pass means the loader's worker processes never drain at an epoch's end.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # the workers' seed
            order = torch.randperm(self.n, generator=generator).tolist()
            torch.randperm(self.n, generator=generator)  # the sampler's empty tail
            for start in range(0, self.n - self.batch_size + 1, self.batch_size):
                yield order[start:start + self.batch_size]


class _Batches:
    """Endless batches of a dataset, decoded by ``workers`` processes (0: on this thread) into
    pinned memory when ``pin`` (CUDA), with the seconds spent waiting for them."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, *, workers: int, pin: bool):
        loader = DataLoader(dataset, batch_sampler=_EpochBatches(len(dataset),
                                                                 min(batch_size, len(dataset)), seed),
                            num_workers=workers, collate_fn=stack_batch, pin_memory=pin,
                            prefetch_factor=4 if workers else None)
        self._iterator = iter(loader)
        self.wait_s = 0.0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        started = time.perf_counter()
        batch = next(self._iterator)
        self.wait_s += time.perf_counter() - started
        return batch

    def close(self) -> None:
        """Stop the worker processes now (they would otherwise live until garbage collection)."""
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _split_workers(workers: int, reference: bool) -> tuple[int, int]:
    """(task, reference) loader processes: the reference loader, which loads as many images per
    step as the task's by default, gets half."""
    if not reference:
        return workers, 0
    return workers - workers // 2, workers // 2


def run_update(current: nn.Module, tokenizer: Callable, task: Dataset, classnames: list[str], *,
               config: UpdateConfig, initial: nn.Module | None = None,
               reference: ReferenceSet | None = None, template: str = "a photo of a {}.",
               device: str | torch.device = "cpu", num_workers: int = 0, report_every: int = 1,
               on_step: Callable[[StepInfo], None] | None = None,
               should_cancel: Callable[[], bool] | None = None) -> UpdateResult:
    """Run one update (one continual-learning task) and return the weights to serve next.

    Args:
        current: the model being served, theta_{t-1}; it is not modified (the student is a copy).
        tokenizer: the model's tokenizer.
        task: yields ``(image tensor, label)`` with train-time preprocessing.
        classnames: the task's class names, indexed by label.
        config: hyper-parameters; ``config.method`` picks the method.
        initial: the original pre-trained model (ZSCL's teacher); frozen, never modified.
        reference: reference images (yielding ``(tensor, index)``, eval preprocessing) and texts,
            with the teacher's text embeddings if the caller already has them.
        template: the prompt template of the task loss (the first of the dataset's templates).
        device: where to train.
        num_workers: DataLoader processes that decode and augment images, shared between the
            task's and the reference set's batches (0: on this thread). The batches, and so the
            losses, are the same for any number; only random augmentations draw differently.
        report_every: ``on_step`` is called every this many steps (and after the last). Each
            report reads the losses back from the device, a sync that stalls the device's queue,
            so on a GPU report every few steps.
        on_step: called with a :class:`StepInfo` (see ``report_every``).
        should_cancel: checked every ``config.cancel_check_every`` steps; True stops the update
            with :class:`UpdateCancelled`.

    Raises:
        ConfigError: the method needs a teacher or reference set that was not given.
        DatasetError: the task is smaller than one batch or has fewer than 2 classes.
        UpdateCancelled: ``should_cancel`` returned True.
    """
    device = torch.device(device)
    method: Method = get_method(config.method)
    teacher_model = _teacher_for(method, classnames, task, current=current, initial=initial,
                                 reference=reference)
    if report_every < 1:
        raise ConfigError(f"report_every must be at least 1, got {report_every}")
    torch.manual_seed(config.seed)
    student = _student(current, config, device)
    start_state = {k: v.detach().to(device).clone() for k, v in current.state_dict().items()}
    prompts = tokenizer([template.format(c) for c in classnames]).to(device)
    average, snapshots, losses, data_wait, compute = _train(
        student, start_state, prompts, task, teacher_model, reference, tokenizer, method=method,
        config=config, device=device, num_workers=num_workers, report_every=report_every,
        on_step=on_step, should_cancel=should_cancel)
    final = student.state_dict()
    if average is not None:
        final = average
    elif method.wise_ft:
        final = interpolate(start_state, final, config.wise_alpha)
    return UpdateResult(
        state_dict={k: v.detach().to("cpu") for k, v in final.items()},
        steps=config.steps, snapshots=snapshots,
        last_losses=_floats(losses), data_wait_s=data_wait, compute_s=compute)


def _train(student: nn.Module, start_state: dict[str, torch.Tensor], prompts: torch.Tensor,
           task: Dataset, teacher_model: nn.Module | None, reference: ReferenceSet | None,
           tokenizer: Callable, *, method: Method, config: UpdateConfig, device: torch.device,
           num_workers: int, report_every: int, on_step, should_cancel):
    """Set up the batches and the teacher, run the loop, stop the loader processes; returns
    (weight average or None, snapshots, last losses, data wait s, compute s)."""
    pin = device.type == "cuda"
    task_workers, ref_workers = _split_workers(
        num_workers, teacher_model is not None and method.distill_on == "reference")
    batches = [_Batches(task, config.batch_size, config.seed, workers=task_workers, pin=pin)]
    try:
        teacher = _Teacher.setup(teacher_model, method, reference, tokenizer, prompts,
                                 config=config, device=device, workers=ref_workers, pin=pin)
        if teacher is not None and teacher.ref_batches is not None:
            batches.append(teacher.ref_batches)
        loop = _Loop(student, start_state, prompts, batches[0], teacher, method=method,
                     config=config, device=device)
        started = time.perf_counter()
        average, snapshots, losses = loop.run(report_every, on_step, should_cancel)
        wall = time.perf_counter() - started
    finally:
        for source in batches:
            source.close()
    data_wait = sum(source.wait_s for source in batches)
    return average, snapshots, losses, data_wait, max(0.0, wall - data_wait)


def _student(current: nn.Module, config: UpdateConfig, device: torch.device) -> nn.Module:
    """A training copy of ``current`` on ``device``, its norm statistics frozen if configured."""
    student = copy.deepcopy(current).to(device)
    student.train()
    if config.norm_stats == "frozen":
        logger.debug("norm_stats=frozen: %d normalisation layers kept in eval mode",
                     freeze_norm_stats_(student))
    return student


def _teacher_for(method: Method, classnames: list[str], task: Dataset, *, current: nn.Module,
                 initial: nn.Module | None, reference: ReferenceSet | None) -> nn.Module | None:
    """The frozen model the method distils from, once the inputs are checked."""
    if len(classnames) < 2:
        raise DatasetError(f"a task needs at least 2 classes, got {len(classnames)}")
    if len(task) == 0:
        raise DatasetError("the task dataset is empty")
    teacher = {"initial": initial, "previous": current, None: None}[method.teacher]
    if method.teacher and teacher is None:
        raise ConfigError(f"method {method.name} distils from the initial model: pass initial=")
    if method.needs_reference and reference is None:
        raise ConfigError(f"method {method.name} needs a reference set: pass reference=")
    return teacher


@dataclass
class _Teacher:
    """What distillation needs from the frozen teacher, set up once per update: its text
    embeddings (of the reference texts, or for LwF of the task's prompts), its logit scale, and
    for reference-set methods the cached image features and the reference batches."""

    model: nn.Module
    texts: torch.Tensor
    scale: torch.Tensor
    cache: _TeacherImageCache | None = None
    ref_batches: _Batches | None = None

    @classmethod
    def setup(cls, model: nn.Module | None, method: Method, reference: ReferenceSet | None,
              tokenizer: Callable, prompts: torch.Tensor, *, config: UpdateConfig,
              device: torch.device, workers: int, pin: bool) -> _Teacher | None:
        if model is None:
            return None
        model.eval()
        scale = model.logit_scale.exp().detach()
        if method.distill_on != "reference":  # LwF: the task's own prompts, encoded once
            with torch.no_grad():
                return cls(model, model.encode_text(prompts, normalize=True).float(), scale)
        texts = (reference.text_features.to(device) if reference.text_features is not None
                 else encode_texts(model, tokenizer, reference.texts, device=device))
        batches = _Batches(reference.images, config.reference_batch, config.seed + 1,
                           workers=workers, pin=pin)
        return cls(model, texts, scale, _TeacherImageCache(model, len(reference.images)), batches)

    def losses(self, student_feats: torch.Tensor, images: torch.Tensor,
               ref: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *, method: Method,
               config: UpdateConfig) -> dict[str, torch.Tensor]:
        """The weighted distillation terms (Eq. 5-6) for one batch; ``ref`` is (images on the
        device, their indices on the device, the same indices on the host)."""
        if ref is not None:
            teacher_feats = self.cache(*ref)
        else:
            with torch.no_grad():
                teacher_feats = self.model.encode_image(images).float()
        kd = feature_distillation(
            scaled_cosine_logits(student_feats.float(), self.texts, self.scale),
            scaled_cosine_logits(teacher_feats, self.texts, self.scale), config.temperature)
        out = {"kd_image": config.kd_image_weight * kd["kd_image"]}
        if method.text_side:
            out["kd_text"] = config.kd_text_weight * kd["kd_text"]
        return out


class _Loop:
    """The optimizer loop over one student: :meth:`run` returns (weight average or None,
    snapshots, last losses)."""

    def __init__(self, student: nn.Module, start_state: dict[str, torch.Tensor],
                 prompts: torch.Tensor, task_batches: _Batches, teacher: _Teacher | None, *,
                 method: Method, config: UpdateConfig, device: torch.device):
        self.student, self.start_state, self.prompts = student, start_state, prompts
        self.task_batches, self.teacher = task_batches, teacher
        self.method, self.config, self.device = method, config, device
        self.params = trainable_parameters(student, config.trainable)
        self.anchor = ({k: p.detach().clone() for k, p in self.params.items()}
                       if method.weight_constraint and config.l2_weight > 0 else None)
        # fused AdamW: one kernel for all parameters on CUDA; the same update rule
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=config.lr,
                                           weight_decay=config.weight_decay,
                                           fused=device.type == "cuda")
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _cosine_with_warmup(config.warmup, config.steps))
        self.scale = student.logit_scale.exp().detach()

    def run(self, report_every: int, on_step: Callable[[StepInfo], None] | None,
            should_cancel: Callable[[], bool] | None):
        config = self.config
        average, snapshots = (self.start_state, 1) if self.method.weight_ensemble else (None, 0)
        losses: dict[str, torch.Tensor] = {}
        for step in range(1, config.steps + 1):
            lr = self.optimizer.param_groups[0]["lr"]
            losses = self.step()
            if average is not None and (step % config.ensemble_every == 0 or step == config.steps):
                average = running_mean(average, self.student.state_dict(), snapshots)
                snapshots += 1
            if on_step is not None and (step % report_every == 0 or step == config.steps):
                on_step(StepInfo(step, config.steps, _floats(losses), lr))
            if should_cancel is not None and step % config.cancel_check_every == 0 \
                    and should_cancel():
                raise UpdateCancelled(step)
        return average, snapshots, losses

    def step(self) -> dict[str, torch.Tensor]:
        """One optimizer step (over ``grad_accum`` micro-batches); its loss terms, on the device."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(config.grad_accum):
            losses = self.batch_losses()
            (sum(losses.values()) / config.grad_accum).backward()
        if self.anchor is not None:
            losses["l2"] = _add_weight_constraint_grad_(self.params, self.anchor, config.l2_weight)
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params.values(), config.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        return losses

    def batch_losses(self) -> dict[str, torch.Tensor]:
        """The named loss terms of one micro-batch (task loss, then distillation)."""
        device, teacher, config = self.device, self.teacher, self.config
        images, labels = (t.to(device, non_blocking=True) for t in self.task_batches.next())
        ref = None
        if teacher is not None and teacher.ref_batches is not None:
            ref_images, index = teacher.ref_batches.next()
            ref = (ref_images.to(device, non_blocking=True), index.to(device, non_blocking=True),
                   index)
        use_bf16 = config.bf16 and device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            features = self.student.encode_image(images if ref is None
                                                 else torch.cat([images, ref[0]]))
            task_features = features[: len(images)]
            logits = scaled_cosine_logits(task_features, self.student.encode_text(self.prompts),
                                          self.scale)
            losses = {"ce": F.cross_entropy(logits.float(), labels,
                                            label_smoothing=config.label_smoothing)}
            if teacher is not None:
                student_feats = features[len(images):] if ref is not None else task_features
                losses.update(teacher.losses(student_feats, images, ref, method=self.method,
                                             config=config))
        return losses


def _floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in losses.items()}

"""Hyper-parameters of one continual update, with the ZSCL paper's defaults (MTIL, ViT-B/16)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = ["UpdateConfig"]

NORM_STATS = ("frozen", "adapt")
MAX_SEED = 2**32 - 1
_TRAINABLE = re.compile(r"^(all|image|last:[1-9][0-9]*)$")


@dataclass(frozen=True)
class UpdateConfig:
    """Everything that shapes one update. Defaults follow ../shared/ZSCL.md (MTIL setting).

    Attributes:
        method: one of :data:`zscl_core.methods.METHODS`.
        steps: optimizer steps.
        batch_size: task images per micro-batch.
        ref_batch_size: reference images per micro-batch (distillation); None (the default)
            follows ``batch_size``, as the paper's 64 + 64 does. Read :attr:`reference_batch`.
        lr, weight_decay: AdamW with a cosine schedule after a linear warm-up.
        warmup_steps: linear warm-up steps, < steps (or 0: none); None (the default) means
            min(100, steps // 10), so a short update is never longer in warm-up than in
            training. Read :attr:`warmup`.
        label_smoothing: of the task cross-entropy.
        temperature: distillation temperature T.
        kd_image_weight, kd_text_weight: weights of the two distillation terms.
        l2_weight: lambda of the weight constraint sum (theta - theta_start)^2 (0 turns it off).
        ensemble_every: k, the weight-ensemble period in steps.
        wise_alpha: WiSE-FT weight of the fine-tuned model (0.8 in the paper).
        grad_accum: micro-batches per optimizer step.
        trainable: "all" (both towers), "image" (image tower only) or "last:N" (the last N
            groups of each tower, counted as open_clip's tower locking does: 1 = the
            projection, 2 = it and the last block, ...); the logit scale never trains.
        bf16: autocast to bfloat16 on CUDA (ignored on the CPU).
        norm_stats: "frozen" (default) keeps every normalisation layer that tracks running
            statistics (BatchNorm, SyncBatchNorm, InstanceNorm with running stats) in eval mode
            for the whole update, so its running mean and variance are exactly those of the
            served model; "adapt" lets them re-estimate from the task and reference batches.
            ZSCL's defences (distillation, weight ensemble, weight constraint) act on parameters
            and logits, never on buffers: on the starter's EfficientNet tower, 40 "adapt" steps
            on 28x28 grey Fashion-MNIST took CIFAR-10 zero-shot from 53.7% to 15.7%.
        max_grad_norm: gradient clipping (None: off).
        seed: seeds data order and augmentation.
        cancel_check_every: how often (steps) the cancellation check runs (every step by
            default: a cancel then takes effect within one step, whatever the step time).
    """

    method: str = "zscl"
    steps: int = 1000
    batch_size: int = 64
    ref_batch_size: int | None = None
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    label_smoothing: float = 0.2
    temperature: float = 2.0
    kd_image_weight: float = 1.0
    kd_text_weight: float = 1.0
    l2_weight: float = 1.0
    ensemble_every: int = 100
    wise_alpha: float = 0.8
    grad_accum: int = 1
    trainable: str = "all"
    bf16: bool = True
    norm_stats: str = "frozen"
    max_grad_norm: float | None = None
    seed: int = 0
    cancel_check_every: int = 1

    def __post_init__(self) -> None:
        from .methods import METHODS  # methods imports nothing from here at import time

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.method in METHODS, f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        need(1 <= self.steps <= 1_000_000, f"steps must be in [1, 1e6], got {self.steps}")
        need(1 <= self.batch_size <= 4096, f"batch_size must be in [1, 4096], got {self.batch_size}")
        need(self.ref_batch_size is None or 1 <= self.ref_batch_size <= 4096,
             f"ref_batch_size must be in [1, 4096] or None (= batch_size), got {self.ref_batch_size}")
        need(0 < self.lr <= 1.0, f"lr must be in (0, 1], got {self.lr}")
        need(0 <= self.weight_decay <= 1.0, f"weight_decay must be in [0, 1], got {self.weight_decay}")
        need(self.warmup_steps is None or 0 <= self.warmup_steps < self.steps,
             f"warmup_steps must be in [0, steps={self.steps}) or None (= min(100, steps // 10)), "
             f"got {self.warmup_steps}; lower it or raise steps")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 < self.temperature <= 100, f"temperature must be in (0, 100], got {self.temperature}")
        for name in ("kd_image_weight", "kd_text_weight", "l2_weight"):
            need(0 <= getattr(self, name) <= 1e4, f"{name} must be in [0, 1e4], got {getattr(self, name)}")
        need(1 <= self.ensemble_every <= 1_000_000,
             f"ensemble_every must be in [1, 1000000] (steps' own cap), got {self.ensemble_every}")
        need(0 <= self.wise_alpha <= 1, f"wise_alpha must be in [0, 1], got {self.wise_alpha}")
        need(1 <= self.grad_accum <= 1024, f"grad_accum must be in [1, 1024], got {self.grad_accum}")
        need(bool(_TRAINABLE.match(self.trainable)),
             f"trainable must be 'all', 'image' or 'last:N', got {self.trainable!r}")
        need(self.norm_stats in NORM_STATS,
             f"norm_stats must be one of {list(NORM_STATS)}, got {self.norm_stats!r}")
        need(self.max_grad_norm is None or self.max_grad_norm > 0,
             f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        # the seed reaches torch.manual_seed, torch.Generator (as seed + 1), random.Random and
        # numpy; 32 bits suit all of them (numpy's legacy seed takes no more)
        need(0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        need(1 <= self.cancel_check_every <= 10_000,
             f"cancel_check_every must be in [1, 10000], got {self.cancel_check_every}")

    @property
    def reference_batch(self) -> int:
        """Reference images per micro-batch: ``ref_batch_size``, or ``batch_size`` when unset."""
        return self.ref_batch_size if self.ref_batch_size is not None else self.batch_size

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps``, or min(100, steps // 10) when unset."""
        return self.warmup_steps if self.warmup_steps is not None else min(100, self.steps // 10)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "UpdateConfig":
        """Build from a dict, refusing unknown keys with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown hyper-parameters {unknown}; known: {sorted(known)}")
        return cls(**values)

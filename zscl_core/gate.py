"""The promotion gate: does a candidate keep what the served model could do?

Pure functions on paired scores: every dataset is scored by the served model (before) and the
candidate (after) on the SAME images, so the change in accuracy is a paired difference and its
sampling error comes from the discordant images alone (McNemar's view): with n images, b right
before and wrong after, c wrong before and right after, the per-image difference d_i is -1, 0 or
+1 and

    delta = 100 * (c - b) / n,    se(delta) = 100 * sqrt(((b + c) / n - ((c - b) / n)^2) / n).

``margin = z * se`` with z the one-sided normal quantile of ``policy.confidence`` (1.645 at 0.95).
A rule fails only when the measured change is beyond its threshold by more than its margin, so a
1-point "drop" on 300 images that could be chance does not reject a candidate:

- the new task's held-out split must gain more than ``min_new_task_gain`` points, past the
  margin (the gain is real);
- every retained dataset (held-out splits of tasks learned in the served lineage, and the
  zero-shot suites, never trained on) may drop at most ``max_dataset_drop`` points, and their
  mean drop at most ``max_mean_drop`` points (the mean's margin combines the datasets' errors,
  which are independent: se = sqrt(sum se_i^2) / k);
- the label-free drift (``zscl_core.evaluate.drift``), if a ``max_drift`` is set, must not
  exceed it.

``confidence=0.5`` gives z = 0: the bare point estimates decide, as a gate without noise would.
Datasets are keyed by id (names are not unique); names are carried for the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import torch

from .errors import ConfigError

__all__ = ["GatePolicy", "GateReport", "PairedScore", "evaluate_gate"]


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds in accuracy points (0-100) and the confidence of the noise margins.

    Defaults: a real gain (> 0 past its margin), mean drop <= 1, any drop <= 3, at 95%.
    """

    min_new_task_gain: float = 0.0
    max_mean_drop: float = 1.0
    max_dataset_drop: float = 3.0
    max_drift: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("max_mean_drop", "max_dataset_drop"):
            if not 0 <= getattr(self, name) <= 100:
                raise ConfigError(f"{name} must be in [0, 100] accuracy points")
        if not -100 <= self.min_new_task_gain <= 100:
            raise ConfigError("min_new_task_gain must be in [-100, 100] accuracy points")
        if self.max_drift is not None and self.max_drift < 0:
            raise ConfigError("max_drift must be >= 0 or None")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError("confidence must be in [0.5, 1) (0.5: no noise margin; 0.95: a "
                              "one-sided 95% bound)")

    @property
    def z(self) -> float:
        """One-sided normal quantile of ``confidence``."""
        return NormalDist().inv_cdf(self.confidence)


@dataclass(frozen=True)
class PairedScore:
    """One dataset scored before (served model) and after (candidate) on the same ``n`` images.

    Attributes:
        dataset_id, name: the dataset (ids are unique, names need not be).
        kind: "new_task", "learned" or "suite", carried into the report.
        n: images scored.
        correct_before: images the served model gets right.
        lost: images right before and wrong after (McNemar's b).
        gained: images wrong before and right after (McNemar's c).
    """

    dataset_id: str
    name: str
    kind: str
    n: int
    correct_before: int
    lost: int
    gained: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"dataset {self.name!r} was scored on no image")
        if not (0 <= self.lost <= self.correct_before
                and 0 <= self.gained <= self.n - self.correct_before):
            raise ValueError(f"inconsistent paired counts for {self.name!r}: n={self.n}, "
                             f"correct_before={self.correct_before}, lost={self.lost}, "
                             f"gained={self.gained}")

    @classmethod
    def from_correct(cls, dataset_id: str, name: str, kind: str, before: torch.Tensor,
                     after: torch.Tensor) -> "PairedScore":
        """From per-image correctness (bool tensors in the same image order)."""
        before, after = before.bool().flatten(), after.bool().flatten()
        if before.shape != after.shape:
            raise ValueError(f"{name!r}: before and after scored {len(before)} and {len(after)} "
                             f"images; score both models on the same images")
        return cls(dataset_id, name, kind, n=len(before), correct_before=int(before.sum()),
                   lost=int((before & ~after).sum()), gained=int((~before & after).sum()))

    @property
    def before(self) -> float:
        return 100.0 * self.correct_before / self.n

    @property
    def after(self) -> float:
        return 100.0 * (self.correct_before - self.lost + self.gained) / self.n

    @property
    def delta(self) -> float:
        return 100.0 * (self.gained - self.lost) / self.n

    @property
    def se(self) -> float:
        """Standard error of ``delta`` in points (paired difference of proportions)."""
        mean = (self.gained - self.lost) / self.n
        variance = max(0.0, (self.gained + self.lost) / self.n - mean * mean)
        return 100.0 * math.sqrt(variance / self.n)


@dataclass
class GateReport:
    """The gate's verdict with one row per dataset (before / after / delta +- margin)."""

    passed: bool
    reasons: list[str]
    rows: list[dict] = field(default_factory=list)
    mean_drop: float = 0.0
    mean_drop_margin: float = 0.0
    drift: float | None = None
    policy: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _row(score: PairedScore, margin: float) -> dict:
    return {"dataset_id": score.dataset_id, "dataset": score.name, "kind": score.kind,
            "n": score.n, "before": score.before, "after": score.after, "delta": score.delta,
            "margin": margin, "lost": score.lost, "gained": score.gained}


def evaluate_gate(new_task: PairedScore, retained: Sequence[PairedScore], policy: GatePolicy,
                  drift: float | None = None) -> GateReport:
    """Decide whether a candidate may be promoted.

    Args:
        new_task: the new task's held-out split, before and after.
        retained: every learned task (in the served lineage) and zero-shot suite.
        policy: the thresholds and the confidence of the noise margins.
        drift: the label-free drift of the candidate from the served model.
    """
    z = policy.z
    ids = [s.dataset_id for s in (new_task, *retained)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a dataset is scored twice in the gate's inputs: {ids}")
    reasons = []
    margin = z * new_task.se
    rows = [_row(new_task, margin)]
    if new_task.delta - margin <= policy.min_new_task_gain:
        reasons.append(f"new task '{new_task.name}' gained {new_task.delta:+.2f} ± {margin:.2f} "
                       f"points; the policy needs more than {policy.min_new_task_gain:+.2f} "
                       f"past the margin")
    for score in retained:
        margin = z * score.se
        rows.append(_row(score, margin))
        drop = -score.delta
        if drop - margin > policy.max_dataset_drop:
            reasons.append(f"{score.kind} '{score.name}' dropped {drop:.2f} ± {margin:.2f} points "
                           f"(max {policy.max_dataset_drop:.2f}; dataset {score.dataset_id})")
    mean_drop = mean_margin = 0.0
    if retained:
        mean_drop = -sum(s.delta for s in retained) / len(retained)
        mean_margin = z * math.sqrt(sum(s.se ** 2 for s in retained)) / len(retained)
        if mean_drop - mean_margin > policy.max_mean_drop:
            reasons.append(f"mean drop over retained datasets is {mean_drop:.2f} ± "
                           f"{mean_margin:.2f} points (max {policy.max_mean_drop:.2f})")
    if policy.max_drift is not None and drift is not None and drift > policy.max_drift:
        reasons.append(f"label-free drift {drift:.4f} exceeds {policy.max_drift:.4f}")
    return GateReport(passed=not reasons, reasons=reasons, rows=rows, mean_drop=mean_drop,
                      mean_drop_margin=mean_margin, drift=drift, policy=asdict(policy))

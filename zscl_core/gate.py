"""The promotion gate: does a candidate keep what the served model could do?

Pure function on accuracies measured before (served model) and after (candidate):
- the new task's held-out split must gain at least ``min_new_task_gain`` points;
- over every retained dataset (held-out splits of tasks learned before, and the registered
  zero-shot suites, never trained on) the mean drop must be at most ``max_mean_drop`` points and
  every single drop at most ``max_dataset_drop`` points;
- the label-free drift (``zscl_core.evaluate.drift`` of the candidate from the served model), if
  a ``max_drift`` is set, must not exceed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

__all__ = ["GatePolicy", "GateReport", "evaluate_gate"]


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds in accuracy points (0-100). Defaults: gain > 0, mean drop <= 1, any drop <= 3."""

    min_new_task_gain: float = 0.0
    max_mean_drop: float = 1.0
    max_dataset_drop: float = 3.0
    max_drift: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_mean_drop", "max_dataset_drop"):
            if not 0 <= getattr(self, name) <= 100:
                raise ConfigError(f"{name} must be in [0, 100] accuracy points")
        if not -100 <= self.min_new_task_gain <= 100:
            raise ConfigError("min_new_task_gain must be in [-100, 100] accuracy points")
        if self.max_drift is not None and self.max_drift < 0:
            raise ConfigError("max_drift must be >= 0 or None")


@dataclass
class GateReport:
    """The gate's verdict with one row per dataset (before / after / delta)."""

    passed: bool
    reasons: list[str]
    rows: list[dict] = field(default_factory=list)
    mean_drop: float = 0.0
    drift: float | None = None
    policy: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_gate(new_task: tuple[str, float, float],
                  retained: Mapping[str, tuple[str, float, float]],
                  policy: GatePolicy, drift: float | None = None) -> GateReport:
    """Decide whether a candidate may be promoted.

    Args:
        new_task: (name, accuracy before, accuracy after) on the new task's held-out split.
        retained: name -> (kind, before, after) for every learned task and zero-shot suite; kind
            is a label such as "learned" or "suite" carried into the report.
        policy: the thresholds.
        drift: the label-free drift of the candidate from the served model.
    """
    name, before, after = new_task
    rows = [{"dataset": name, "kind": "new_task", "before": before, "after": after,
             "delta": after - before}]
    reasons = []
    if after - before <= policy.min_new_task_gain:
        reasons.append(f"new task '{name}' gained {after - before:+.2f} points; the policy "
                       f"needs more than {policy.min_new_task_gain:+.2f}")
    drops = []
    for dataset, (kind, b, a) in retained.items():
        rows.append({"dataset": dataset, "kind": kind, "before": b, "after": a, "delta": a - b})
        drops.append(b - a)
        if b - a > policy.max_dataset_drop:
            reasons.append(f"{kind} '{dataset}' dropped {b - a:.2f} points (max "
                           f"{policy.max_dataset_drop:.2f})")
    mean_drop = sum(drops) / len(drops) if drops else 0.0
    if mean_drop > policy.max_mean_drop:
        reasons.append(f"mean drop over retained datasets is {mean_drop:.2f} points (max "
                       f"{policy.max_mean_drop:.2f})")
    if policy.max_drift is not None and drift is not None and drift > policy.max_drift:
        reasons.append(f"label-free drift {drift:.4f} exceeds {policy.max_drift:.4f}")
    return GateReport(passed=not reasons, reasons=reasons, rows=rows, mean_drop=mean_drop,
                      drift=drift, policy=asdict(policy))

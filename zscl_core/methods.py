"""The update methods, as data: each one a set of switches on the one training loop.

ZSCL (Zheng et al., ICCV 2023) = task loss + feature distillation from the INITIAL model on a
reference set + weight ensemble (+ optional weight constraint). The baselines and ablations of
the paper's Table 1/4 differ only in which of these parts they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Method", "METHODS", "get_method"]


@dataclass(frozen=True)
class Method:
    """Which parts of the loop a method uses.

    Attributes:
        name: the method's key in :data:`METHODS`.
        teacher: "initial" (the original pre-trained model), "previous" (the model the update
            starts from) or None (no distillation).
        distill_on: "reference" (reference images against reference texts) or "task" (the
            task's own images against its class prompts, as LwF does).
        text_side: whether the text-side (transposed) distillation term is used.
        weight_ensemble: the running uniform average of snapshots every k steps.
        weight_constraint: the L2 pull towards the start weights.
        wise_ft: interpolate start and fine-tuned weights at the end.
    """

    name: str
    teacher: Literal["initial", "previous"] | None = None
    distill_on: Literal["reference", "task"] = "reference"
    text_side: bool = True
    weight_ensemble: bool = False
    weight_constraint: bool = False
    wise_ft: bool = False

    @property
    def needs_reference(self) -> bool:
        return self.teacher is not None and self.distill_on == "reference"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zscl", teacher="initial", weight_ensemble=True, weight_constraint=True),
    Method("zscl_no_avg", teacher="initial", weight_constraint=True),
    Method("zscl_no_distill", weight_ensemble=True, weight_constraint=True),
    Method("continual_ft"),
    Method("lwf", teacher="previous", distill_on="task", text_side=False),
    Method("wise_ft", wise_ft=True),
)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None

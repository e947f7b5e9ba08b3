"""Calibration: temperature scaling and the expected calibration error (Guo et al., ICML 2017).

- Temperature scaling (Guo et al., Sec. 4.2): one scalar ``s`` multiplies every logit,
  ``q = softmax(s * z)``; it changes no argmax, hence no accuracy. Here ``s`` is CLIP's logit
  scale and it is fitted to a teacher's probabilities ``p`` instead of labels: the minimiser of
  the mean cross-entropy ``-sum_k p_k log q_k`` (equivalently of KL(p || q)). Its derivative in
  ``s`` is ``E_q[z] - E_p[z]``, increasing in ``s`` (the second derivative is ``Var_q[z]``), so
  the 1-D problem is convex and bisection on the sign of the derivative solves it.
- Expected calibration error (Guo et al., Eq. 3; Naeini et al., AAAI 2015): confidences (the top
  probability) in ``bins`` equal-width bins ``((b-1)/B, b/B]``;
  ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["expected_calibration_error", "fit_logit_scale"]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, *, bins: int = 15
                               ) -> float:
    """ECE of predicted class probabilities, in [0, 1] (15 equal-width bins as in Guo et al.).

    Args:
        probs: (n, classes) probabilities, rows summing to 1.
        labels: (n,) the true class indices.
        bins: the number of equal-width confidence bins over (0, 1].
    """
    if len(probs) == 0 or len(probs) != len(labels):
        raise ValueError(f"need as many labels as rows of probabilities, and at least one; "
                         f"got {len(probs)} rows and {len(labels)} labels")
    confidence, predicted = probs.detach().double().cpu().max(dim=-1)
    correct = (predicted == labels.cpu()).double()
    # bin b holds ((b-1)/B, b/B]; a confidence of exactly 0 joins the first bin
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    # |B_b| / n * |acc(B_b) - conf(B_b)| = |sum of correct - sum of confidence in B_b| / n
    gap = (torch.bincount(index, weights=correct, minlength=bins)
           - torch.bincount(index, weights=confidence, minlength=bins))
    return float(gap.abs().sum() / len(probs))


def fit_logit_scale(cosines: torch.Tensor, teacher_probs: torch.Tensor, *,
                    bounds: tuple[float, float] = (1.0, 100.0), iterations: int = 60) -> float:
    """The scale ``s`` whose ``softmax(s * cosines)`` is closest to the teacher's probabilities.

    Minimises the mean over rows of the cross-entropy ``-sum_k p_k log softmax(s * c)_k``, a
    convex function of ``s``, by bisection in ``log s``.

    Args:
        cosines: (n, classes) the student's unscaled logits (cosine similarities for CLIP).
        teacher_probs: (n, classes) the probabilities to match, rows summing to 1.
        bounds: the range searched; the answer is clamped to it (CLIP caps its scale at 100).
        iterations: bisection steps (60 narrow the bracket below float precision).
    """
    if cosines.shape != teacher_probs.shape or cosines.ndim != 2 or len(cosines) == 0:
        raise ValueError(f"cosines {tuple(cosines.shape)} and teacher probabilities "
                         f"{tuple(teacher_probs.shape)} must be the same non-empty (n, classes)")
    cosines, teacher_probs = cosines.double(), teacher_probs.double()
    target = (teacher_probs * cosines).sum(-1).mean()  # E_p[z]

    def slope(log_scale: float) -> float:  # sign of d(cross-entropy)/ds
        q = (math.exp(log_scale) * cosines).softmax(-1)
        return float((q * cosines).sum(-1).mean() - target)

    low, high = math.log(bounds[0]), math.log(bounds[1])
    if slope(low) >= 0:
        return bounds[0]
    if slope(high) <= 0:
        return bounds[1]
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return math.exp((low + high) / 2)

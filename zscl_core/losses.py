"""Pure loss functions of ZSCL (Zheng et al., ICCV 2023, Sec. 3.2).

Feature-space distillation: with teacher logits L0 and student logits L over a reference batch
(rows: images, columns: reference texts),

    KD(L, L0) = T^2 * mean_rows( - sum_cols softmax(L0 / T) * log_softmax(L / T) )

The image-side term uses the matrices as they are (a distribution over texts per image); the
text-side term uses their transposes (a distribution over images per text).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "soft_cross_entropy",
    "feature_distillation",
    "scaled_cosine_logits",
    "l2_weight_constraint",
]


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 2.0) -> torch.Tensor:
    """Distillation loss of one side: soft targets from the teacher, scaled by T^2.

    Args:
        student_logits: (N, C) logits of the model being trained.
        teacher_logits: (N, C) logits of the frozen teacher (no gradient flows into them).
        temperature: softening temperature T.

    Returns:
        A scalar: the mean over rows of the cross-entropy, times T^2.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}")
    targets = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(targets * log_probs).sum(dim=-1).mean() * temperature ** 2


def feature_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float = 2.0) -> dict[str, torch.Tensor]:
    """Image-side and text-side distillation terms of ZSCL.

    Args:
        student_logits: (images, texts) scaled cosine logits of the student image features
            against the teacher's reference-text embeddings.
        teacher_logits: the same for the teacher's image features.
        temperature: T (2 in the paper).

    Returns:
        ``{"kd_image": ..., "kd_text": ...}``; the text side is the transposed problem.
    """
    return {
        "kd_image": soft_cross_entropy(student_logits, teacher_logits, temperature),
        "kd_text": soft_cross_entropy(student_logits.t(), teacher_logits.t(), temperature),
    }


def scaled_cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                         scale: torch.Tensor | float) -> torch.Tensor:
    """s * cos(image, text) for every pair; the inputs need not be normalised."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    return scale * image_features @ text_features.t()


def l2_weight_constraint(params: dict[str, torch.Tensor],
                         anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over parameters of ||theta - theta_anchor||^2 (the optional ZSCL weight constraint).

    Args:
        params: name -> current (trainable) parameter.
        anchor: name -> the parameter value at the start of the update; must hold every name.
    """
    missing = sorted(set(params) - set(anchor))
    if missing:
        raise KeyError(f"anchor lacks parameters: {missing[:5]}")
    total = None
    for name, value in params.items():
        term = (value.float() - anchor[name].float()).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2_weight_constraint needs at least one parameter")
    return total

"""Evaluation: accuracy of a model with a zero-shot head, and label-free drift.

Drift is ZSCL's distillation loss (image side + text side, ``zscl_core.losses``) of a model
against a reference model on held-out reference images, both scored against the reference
model's text embeddings of the reference texts, minus the same loss of the reference model
against itself (the soft targets' entropy): a KL divergence times T^2, 0 when the two models
agree, larger the more the candidate's image-text geometry moved. It needs no labels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import stack_batch
from .heads import encode_texts
from .losses import feature_distillation, scaled_cosine_logits

__all__ = ["encode_images", "accuracy", "accuracy_from_features", "correct", "correct_from_features",
           "drift"]


@torch.no_grad()
def encode_images(model: nn.Module, dataset: Dataset, *, device: str | torch.device = "cpu",
                  batch_size: int = 128, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image features and the second item of each sample (labels or indices)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=stack_batch)
    feats, targets = [], []
    for images, target in loader:
        feats.append(model.encode_image(images.to(device), normalize=True).float())
        targets.append(target.to(device))
    return torch.cat(feats), torch.cat(targets)


def correct_from_features(features: torch.Tensor, labels: torch.Tensor,
                          head: torch.Tensor) -> torch.Tensor:
    """Per image, whether the top-1 class of normalised features against a (dim, classes) head
    is the label (a bool tensor on the CPU, in dataset order)."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty dataset is undefined")
    predictions = (features @ head.to(features.device, features.dtype)).argmax(dim=-1)
    return (predictions == labels).cpu()


def accuracy_from_features(features: torch.Tensor, labels: torch.Tensor,
                           head: torch.Tensor) -> float:
    """Top-1 accuracy in percent of normalised features against a (dim, classes) head."""
    return 100.0 * correct_from_features(features, labels, head).float().mean().item()


def correct(model: nn.Module, head: torch.Tensor, dataset: Dataset, *,
            device: str | torch.device = "cpu", batch_size: int = 128) -> torch.Tensor:
    """Per-image top-1 correctness of ``model`` with ``head`` on a labelled dataset (what the
    gate pairs before / after)."""
    feats, labels = encode_images(model, dataset, device=device, batch_size=batch_size)
    return correct_from_features(feats, labels, head)


def accuracy(model: nn.Module, head: torch.Tensor, dataset: Dataset, *,
             device: str | torch.device = "cpu", batch_size: int = 128) -> float:
    """Top-1 accuracy (percent) of ``model`` with ``head`` on a labelled dataset."""
    return 100.0 * correct(model, head, dataset, device=device,
                           batch_size=batch_size).float().mean().item()


@torch.no_grad()
def drift(model: nn.Module, reference_model: nn.Module, tokenizer, images: Dataset,
          texts: list[str], *, temperature: float = 2.0, device: str | torch.device = "cpu",
          batch_size: int = 128) -> float:
    """Label-free drift of ``model`` from ``reference_model`` on held-out reference images.

    Returns the mean over batches of the image-side plus text-side KL divergence (times T^2).
    """
    text = encode_texts(reference_model, tokenizer, texts, device=device)
    scale = reference_model.logit_scale.exp()
    new, _ = encode_images(model, images, device=device, batch_size=batch_size)
    old, _ = encode_images(reference_model, images, device=device, batch_size=batch_size)
    total, count = 0.0, 0
    for start in range(0, len(new), batch_size):
        old_logits = scaled_cosine_logits(old[start:start + batch_size], text, scale)
        parts = feature_distillation(scaled_cosine_logits(new[start:start + batch_size], text, scale),
                                     old_logits, temperature)
        entropy = feature_distillation(old_logits, old_logits, temperature)
        total += float(parts["kd_image"] + parts["kd_text"] - entropy["kd_image"]
                       - entropy["kd_text"])
        count += 1
    return total / count

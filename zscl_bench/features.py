"""Caching the features of a frozen image trunk, so that a CPU can afford the benchmark.

Every method of the benchmark trains the same parts: the last ``train_blocks`` blocks of the image
tower, its pooling and projection, and the whole text tower. The image layers below them are
frozen for every method alike, so their output for each image never changes during the run:
it is computed once (:func:`trunk_features`) and the model that the updates train is the
initial CLIP with its image tower cut at that point (:func:`cut_model`). ``run_update``,
``build_head`` and ``accuracy`` of zscl_core then run unchanged on that cut model and the cached
features, and ZSCL's teacher (the cut initial model) sees exactly what the full teacher would.

Supported image towers: open_clip's VisionTransformer (cut between residual blocks) and timm
trunks with ``conv_stem`` / ``bn1`` / ``blocks`` (EfficientNet, MobileNet families; cut between
stages). ``train_blocks=0`` means no cut: the full model trains on images.
"""

from __future__ import annotations

import copy
import logging
import types
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["cut_model", "memoize_frozen_text", "tower_depth"]

logger = logging.getLogger(__name__)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _vit(visual: nn.Module) -> bool:
    return hasattr(visual, "_embeds") and hasattr(getattr(visual, "transformer", None), "resblocks")


def _timm_blocks(visual: nn.Module) -> nn.Module | None:
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and all(hasattr(trunk, a) for a in ("conv_stem", "bn1", "blocks")):
        return trunk
    return None


def tower_depth(model: nn.Module) -> int:
    """How many blocks the image tower has where it can be cut (0: not supported)."""
    visual = model.visual
    if _vit(visual):
        return len(visual.transformer.resblocks)
    trunk = _timm_blocks(visual)
    return len(trunk.blocks) if trunk is not None else 0


def cut_model(model: nn.Module, train_blocks: int
              ) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """Split a CLIP model into a frozen trunk function and a trainable cut model.

    Args:
        model: the initial CLIP (not modified).
        train_blocks: how many of the image tower's last blocks stay in the cut model.

    Returns:
        ``(cut, trunk)``: ``cut.encode_image`` takes what ``trunk(images)`` returns; ``cut``
        keeps the text tower and logit scale of ``model``.

    Raises:
        ValueError: the tower cannot be cut, or ``train_blocks`` is not below its depth.
    """
    depth = tower_depth(model)
    if depth == 0:
        raise ValueError(f"cannot cut the image tower {type(model.visual).__name__}; use "
                         "--train-blocks 0 (train on images, no feature cache)")
    if not 1 <= train_blocks < depth:
        raise ValueError(f"train_blocks must be in [1, {depth - 1}] for this {depth}-block image "
                         f"tower, got {train_blocks}")
    keep = depth - train_blocks
    frozen = copy.deepcopy(model.visual).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    cut = copy.deepcopy(model)
    if _vit(model.visual):
        frozen.transformer.resblocks = frozen.transformer.resblocks[:keep]

        def trunk(images: torch.Tensor) -> torch.Tensor:
            return frozen.transformer(frozen._embeds(images))

        cut.visual._embeds = _identity  # the instance attribute shadows the method
        cut.visual.transformer.resblocks = cut.visual.transformer.resblocks[keep:]
    else:
        frozen_trunk = _timm_blocks(frozen)

        def trunk(images: torch.Tensor) -> torch.Tensor:
            x = frozen_trunk.bn1(frozen_trunk.conv_stem(images))
            return frozen_trunk.blocks[:keep](x)

        cut_trunk = _timm_blocks(cut.visual)
        cut_trunk.conv_stem, cut_trunk.bn1 = nn.Identity(), nn.Identity()
        cut_trunk.blocks = cut_trunk.blocks[keep:]
    logger.info("image tower cut: %d of %d blocks frozen and cached, %d trained",
                keep, depth, train_blocks)
    cut.eval()
    return cut, torch.no_grad()(trunk)


def _text_parameters(model: nn.Module):
    return (p for name, p in model.named_parameters()
            if not name.startswith("visual.") and name.split(".")[-1] not in ("logit_scale", "logit_bias"))


def _memo_encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """``encode_text`` that remembers its outputs while no text parameter can change."""
    if any(p.requires_grad for p in _text_parameters(self)):
        return type(self).encode_text(self, text, normalize=normalize)
    key = (tuple(text.shape), text.detach().cpu().numpy().tobytes(), normalize)
    out = self._text_memo.get(key)
    if out is None:
        was_training = self.training
        self.train(False)  # a frozen tower runs as in evaluation (no dropout)
        try:
            with torch.no_grad():
                out = type(self).encode_text(self, text, normalize=normalize)
        finally:
            self.train(was_training)
        self._text_memo[key] = out
    return out


def memoize_frozen_text(model: nn.Module) -> nn.Module:
    """Make ``model.encode_text`` remember its outputs, for runs where no method trains text.

    With the text tower frozen, the class prompts a training step encodes are the same at every
    step, and ZSCL's teacher encodes the same reference texts at every update; on a CPU that
    re-encoding costs more than the rest of the step. The memo is bypassed whenever a text
    parameter requires grad, and survives ``copy.deepcopy`` (the bound method follows the copy).
    Only use it when the text weights never change (``trainable="image"`` for every method).
    """
    model._text_memo = {}
    model.encode_text = types.MethodType(_memo_encode_text, model)
    return model

"""Serving a version in reduced precision: which towers may be cast, checked on probe inputs.

A version can be served in bfloat16 or float16 (``ZSCL_INFERENCE_DTYPE``). Each tower's weights
are cast, except the logit scale, and only where the cast tower still agrees with float32 on
probe inputs (:func:`lower_precision_`): the starter's EfficientNet image tower does not, and
stays float32. Image features always come out float32, normalised in float32.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from zscl_core import ConfigError
from zscl_core.reference import photo_crops

__all__ = ["AGREEMENT_COSINE", "DTYPES", "image_features", "lower_precision_", "min_cosine",
           "probe_inputs", "resolve_dtype"]

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A tower served in reduced precision must keep every probe's feature within this cosine of its
# float32 feature. Lowest probe cosines in bfloat16: ViT-B-16 (random weights) 0.99995 image,
# 0.99994 text; the starter's MiniLM text tower 0.99986, but its EfficientNet image tower 0.9963
# (0.977 on CIFAR-10 test images, where it flips 3% of the top-1 answers whether cast, autocast
# or with its BatchNorms kept in float32; see docs/serving.md).
AGREEMENT_COSINE = 0.999
PROBE_IMAGES = 8
PROBE_PROMPTS = tuple(f"a photo of a {name}." for name in
                      ("cat", "dog", "car", "airplane", "bird", "ship", "flower", "person"))
KEEP_FLOAT32 = ("logit_scale", "logit_bias")  # exp() of a bfloat16 log(100) is off by up to 1.6%




def image_features(model: nn.Module, pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``model``'s image features of float32 ``pixels``, computed in ``dtype`` (the image tower's
    weights), returned float32 and normalised in float32."""
    return F.normalize(model.encode_image(pixels.to(dtype)).float(), dim=-1)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype of an inference precision name ('float32', 'bfloat16', 'float16')."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown inference precision {dtype!r}; use one of {', '.join(DTYPES)} "
                          f"(ZSCL_INFERENCE_DTYPE, or auto)")
    return DTYPES[dtype]


def _tower_tensors(model: nn.Module, image: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """The floating-point parameters and buffers of the image tower (``model.visual``) or, with
    ``image`` False, of everything else but the logit scale and bias (the text tower)."""
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and name not in KEEP_FLOAT32 \
                and name.startswith("visual.") == image:
            yield name, tensor


@torch.no_grad()
def _cast_tower_(model: nn.Module, image: bool, dtype: torch.dtype
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cast one tower's tensors to ``dtype`` in place; returns (tensor, its float32 data) pairs."""
    originals = [(tensor, tensor.data) for _, tensor in _tower_tensors(model, image)]
    for tensor, data in originals:
        tensor.data = data.to(dtype)
    return originals


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The lowest cosine between matching rows of two normalised feature sets, computed as
    ``1 - |a - b|^2 / 2``: the cosine for unit rows, and 1 where both rows are zero (a tower
    that maps a probe to nothing, as the test's colour model does a word it does not know)."""
    return float(1 - (a.float() - b.float()).pow(2).sum(dim=-1).max() / 2)


def lower_precision_(model: nn.Module, dtype: torch.dtype, pixels: torch.Tensor,
                     tokens: torch.Tensor) -> tuple[torch.dtype, torch.dtype, dict[str, float]]:
    """Cast each tower of ``model`` to ``dtype`` in place where it still agrees with float32.

    The weights are cast, sparing autocast's casts on every forward. A tower whose features on
    the probes fall below :data:`AGREEMENT_COSINE` of its float32 features (or whose forward
    fails in ``dtype``) is restored to float32, unchanged, with a warning. The logit scale stays
    float32.

    Args:
        model: a float32 open_clip model (image tower ``model.visual``), in eval mode.
        dtype: the precision asked for.
        pixels: preprocessed probe images, float32, on the model's device.
        tokens: tokenised probe prompts, on the model's device.

    Returns:
        (image tower dtype, text tower dtype, each tower's lowest probe cosine to float32).
    """
    def encode(tower: str, weights: torch.dtype) -> torch.Tensor:
        with torch.inference_mode():
            return (image_features(model, pixels, weights) if tower == "image"
                    else F.normalize(model.encode_text(tokens).float(), dim=-1))

    reference = {tower: encode(tower, torch.float32) for tower in ("image", "text")}
    chosen, cosines = {}, {}
    for tower in ("image", "text"):
        originals = _cast_tower_(model, tower == "image", dtype)
        try:
            cosines[tower] = min_cosine(encode(tower, dtype), reference[tower])
        except RuntimeError as exc:  # an op without a kernel for this dtype on this device
            logger.warning("the %s tower does not run in %s here (%s)", tower, dtype, exc)
            cosines[tower] = float("nan")
        chosen[tower] = dtype if cosines[tower] >= AGREEMENT_COSINE else torch.float32
        if chosen[tower] != dtype:
            logger.warning("the %s tower stays float32: in %s its features on probe photos and "
                           "prompts fell to cosine %.4f of float32's (the bar is %.3f)", tower,
                           str(dtype).removeprefix("torch."), cosines[tower], AGREEMENT_COSINE)
            for tensor, data in originals:
                tensor.data = data
    return chosen["image"], chosen["text"], cosines


def probe_inputs(preprocess: Callable[[Image.Image], torch.Tensor], tokenizer: Callable,
                 device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Probe inputs for :func:`lower_precision_`: crops of scikit-image's sample photos (no
    evaluation set's images) and a few prompts, on ``device``."""
    pixels = torch.stack([preprocess(crop) for crop in photo_crops(PROBE_IMAGES)])
    return pixels.to(device), tokenizer(list(PROBE_PROMPTS)).to(device)

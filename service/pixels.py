"""Preprocessing split in two: what must run per image on the host, and what runs per batch on
the model's device.

A served model's eval transform (open_clip's) ends in ``ToTensor`` and ``Normalize``. Run on the
host, those two turn every 224 x 224 image into 600 KB of float32 one Python call at a time, and
on a GPU server they were a sixth of each HTTP process's time (py-spy of a `zscl serve` process
under load). Here the host stops at the resized, cropped RGB image as a uint8 tensor (a quarter of
the bytes to copy to the device), and the batch's ``/ 255``, ``- mean`` and ``/ std`` run once on
the device, in float32, as ``ToTensor`` and ``Normalize`` compute them (tested equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

__all__ = ["DevicePreprocess", "split_preprocess"]

_TO_TENSOR = ("ToTensor", "MaybeToTensor")


class DevicePreprocess:
    """The host part of a transform (PIL steps, then a uint8 ``(3, H, W)`` tensor) and the
    device part (:meth:`finish`: scale and normalise a batch).

    Args:
        host_steps: PIL image -> PIL image (resize, crop, convert), the transform's leading steps.
        mean, std: the transform's ``Normalize`` values, one per channel.
    """

    def __init__(self, host_steps: Callable[[Image.Image], Image.Image], mean: Sequence[float],
                 std: Sequence[float]):
        self.host_steps = host_steps
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image as a uint8 ``(3, H, W)`` tensor, resized and cropped."""
        image = self.host_steps(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 batch ``(n, 3, H, W)`` as the full transform's float32 output, on its device."""
        if pixels.device not in self._on:
            self._on[pixels.device] = (self.mean.to(pixels.device), self.std.to(pixels.device))
        mean, std = self._on[pixels.device]
        return pixels.float().div_(255).sub_(mean).div_(std)


def split_preprocess(transform: Callable) -> DevicePreprocess | None:
    """The :class:`DevicePreprocess` of a ``Compose`` that ends in ToTensor and Normalize (as
    open_clip's do), or None for any other transform (which then runs whole on the host)."""
    steps = getattr(transform, "transforms", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if type(to_tensor).__name__ not in _TO_TENSOR or not isinstance(normalize, T.Normalize) \
            or getattr(normalize, "inplace", False):
        return None
    mean, std = normalize.mean, normalize.std
    if len(mean) != 3 or len(std) != 3:
        return None
    return DevicePreprocess(T.Compose(steps[:-2]), list(mean), list(std))

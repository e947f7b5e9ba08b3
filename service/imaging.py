"""Image decoding with limits: bytes in, a preprocessed tensor out, or an error naming the file.

Pillow reads only the header on ``open``, so the pixel count is checked before any pixel is
decoded (the decompression-bomb guard). Blocking: the service calls it in a worker thread.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import torch
from PIL import Image, UnidentifiedImageError

from .errors import InvalidImage, PayloadTooLarge

__all__ = ["decode_image", "preprocess_images"]


def decode_image(data: bytes, filename: str, *, max_pixels: int) -> Image.Image:
    """An RGB image from encoded bytes.

    Raises:
        InvalidImage: the bytes are not a readable image (names ``filename``).
        PayloadTooLarge: the image has more than ``max_pixels`` pixels.
    """
    if not data:
        raise InvalidImage(filename, "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"image '{filename}' has {width}x{height} = {width * height} pixels, more than "
                    f"the limit of {max_pixels}; downscale it before sending")
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(filename, "not a recognised image format or too large to decode") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(filename, f"truncated or corrupt: {exc}") from exc


def preprocess_images(files: list[tuple[str, bytes]], transform: Callable[[Image.Image], torch.Tensor],
                      *, max_pixels: int) -> torch.Tensor:
    """Decode and transform each (filename, bytes); returns a (n, 3, H, W) batch."""
    return torch.stack([transform(decode_image(data, name, max_pixels=max_pixels))
                        for name, data in files])

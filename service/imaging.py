"""Decoding the images of a request with limits: bytes in, a preprocessed tensor out, or an error
naming the file.

Pillow reads only the header on ``open`` (:func:`zscl_core.data.open_capped`), so the pixel
count is checked before any pixel is decoded (the decompression-bomb guard). Pillow's own guard
may refuse a huge image inside ``open`` already (``DecompressionBombError`` past twice
``Image.MAX_IMAGE_PIXELS``); that is the same "too many pixels" answer, with the count from
Pillow's message. Blocking: the service calls it in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from PIL import Image, UnidentifiedImageError

from records.errors import InvalidImage, PayloadTooLarge
from zscl_core.data import open_capped

__all__ = ["decode_image", "preprocess_images"]


def decode_image(data: bytes, filename: str, *, max_pixels: int) -> Image.Image:
    """An RGB image from encoded bytes.

    Raises:
        InvalidImage: the bytes are not a readable image (names ``filename``).
        PayloadTooLarge: the image has more than ``max_pixels`` pixels (names the count).
    """
    if not data:
        raise InvalidImage(filename, "the file is empty")

    def too_large(size: str, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"image '{filename}' has {size}, more than the limit of {limit}; "
                               f"downscale it before sending")

    try:
        image = open_capped(io.BytesIO(data), max_pixels=max_pixels, too_large=too_large)
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")  # (convert would copy)
    except UnidentifiedImageError as exc:
        raise InvalidImage(filename, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(filename, f"truncated or corrupt: {exc}") from exc


def preprocess_images(files: list[tuple[str, bytes]], transform: Callable[[Image.Image], torch.Tensor],
                      *, max_pixels: int) -> torch.Tensor:
    """Decode and transform each (filename, bytes); returns a (n, 3, H, W) batch."""
    return torch.stack([transform(decode_image(data, name, max_pixels=max_pixels))
                        for name, data in files])

"""Image decoding with limits: bytes in, a preprocessed tensor out, or an error naming the file.

Pillow reads only the header on ``open``, so the pixel count is checked before any pixel is
decoded (the decompression-bomb guard). Pillow's own guard may refuse a huge image inside
``open`` already (``DecompressionBombError`` past twice ``Image.MAX_IMAGE_PIXELS``); that is the
same "too many pixels" answer, with the count from Pillow's message. Blocking: the service calls
it in a worker thread.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import IO

import torch
from PIL import Image, UnidentifiedImageError

from .errors import InvalidImage, PayloadTooLarge

__all__ = ["decode_image", "preprocess_images", "open_capped"]

_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # "Image size (400000000 pixels) exceeds limit..."


def open_capped(source: str | bytes | IO[bytes], *, max_pixels: int,
                too_large: Callable[[str, int], Exception],
                formats: tuple[str, ...] | list[str] | None = None) -> Image.Image:
    """``Image.open`` (header only) with at most ``max_pixels`` pixels.

    Args:
        source: a path or a binary file object.
        max_pixels: the cap.
        too_large: builds the error to raise from a description of the size, e.g.
            ``"20000x20000 = 400000000 pixels"`` (or ``"400000000 pixels"`` when Pillow refused
            the header itself), and the limit it broke; the caller names the file.
        formats: as ``Image.open``.

    Raises:
        what ``too_large`` returns; UnidentifiedImageError, OSError...: as ``Image.open``.
    """
    try:
        image = Image.open(source, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = _PILLOW_PIXELS.search(str(exc))
        if found is None:
            raise too_large(f"too many pixels ({exc})", max_pixels) from exc
        pixels = int(found.group(1))
        # only a cap set above Pillow's own limit lets Pillow refuse an image within the cap
        limit = max_pixels if pixels > max_pixels else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise too_large(f"{pixels} pixels", limit) from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise too_large(f"{width}x{height} = {width * height} pixels", max_pixels)
    return image


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
        return image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise InvalidImage(filename, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(filename, f"truncated or corrupt: {exc}") from exc


def preprocess_images(files: list[tuple[str, bytes]], transform: Callable[[Image.Image], torch.Tensor],
                      *, max_pixels: int) -> torch.Tensor:
    """Decode and transform each (filename, bytes); returns a (n, 3, H, W) batch."""
    return torch.stack([transform(decode_image(data, name, max_pixels=max_pixels))
                        for name, data in files])

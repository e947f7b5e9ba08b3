"""zscl_core.data.open_capped: an image's header is checked against a pixel cap before any pixel
is decoded, and the caller names the error."""

import io

import pytest
from PIL import Image

from zscl_core.data import open_capped


class TooLarge(Exception):
    pass


def png(width: int, height: int) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def test_an_image_within_the_cap_is_opened_header_only():
    image = open_capped(png(40, 30), max_pixels=1200, too_large=lambda size, limit: TooLarge(size))
    assert image.size == (40, 30)
    assert image.tile  # nothing decoded yet: the tiles to decode are still pending (Pillow decodes on load)


def test_one_pixel_over_the_cap_raises_the_callers_error_with_the_size_and_the_limit():
    seen = []

    def too_large(size: str, limit: int) -> TooLarge:
        seen.append((size, limit))
        return TooLarge(size)

    with pytest.raises(TooLarge, match="40x30 = 1200 pixels"):
        open_capped(png(40, 30), max_pixels=1199, too_large=too_large)
    assert seen == [("40x30 = 1200 pixels", 1199)]

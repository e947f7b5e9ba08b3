import io

import pytest
from PIL import Image

from records.errors import InvalidImage, PayloadTooLarge
from service.imaging import decode_image, preprocess_images
from tests.helpers.archives import huge_png
from tests.helpers.colour import png_bytes


def test_decodes_to_rgb():
    buffer = io.BytesIO()
    Image.new("L", (10, 7), 128).save(buffer, format="JPEG")
    image = decode_image(buffer.getvalue(), "grey.jpg", max_pixels=100)
    assert image.mode == "RGB" and image.size == (10, 7)


def test_pixel_limit_is_checked_before_decoding():
    # a 4000x4000 PNG of one colour is ~50 KB on the wire: the header alone must stop it
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(PayloadTooLarge, match="bomb.png.*4000x4000"):
        decode_image(buffer.getvalue(), "bomb.png", max_pixels=1_000_000)


@pytest.mark.parametrize("width, height, size", [
    (7000, 7000, "7000x7000 = 49000000 pixels"),
    (10_000, 10_000, "10000x10000 = 100000000 pixels"),  # past Pillow's warning threshold
    (20_000, 20_000, "400000000 pixels"),  # past twice Pillow's limit: Image.open itself refuses
])
def test_decompression_bombs_are_413_naming_the_pixel_count(width, height, size):
    with pytest.raises(PayloadTooLarge, match=f"image 'bomb.png' has {size}, more than the "
                                              f"limit of 40000000"):
        decode_image(huge_png(width, height), "bomb.png", max_pixels=40_000_000)


def test_a_cap_above_pillows_own_names_the_limit_that_refused():
    limit = 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(PayloadTooLarge, match=f"has 400000000 pixels, more than the limit of {limit}"):
        decode_image(huge_png(20_000, 20_000), "bomb.png", max_pixels=10 ** 9)


@pytest.mark.parametrize("data", [b"", b"not an image", png_bytes("red", size=64)[:60]])
def test_corrupt_images_name_the_file(data):
    with pytest.raises(InvalidImage, match="scan-17.png"):
        decode_image(data, "scan-17.png", max_pixels=10_000)


def test_preprocess_batch_shape():
    batch = preprocess_images([("a", png_bytes("red", 50)), ("b", png_bytes("blue", 20))],
                              lambda im: __import__("torchvision").transforms.functional.to_tensor(im.resize((8, 8))),
                              max_pixels=10_000)
    assert tuple(batch.shape) == (2, 3, 8, 8)

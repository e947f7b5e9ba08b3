"""service.pixels: the host part plus the device part equal the whole transform."""

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from service.pixels import split_preprocess


def _images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    big = Image.fromarray(rng.integers(0, 256, (300, 220, 3), dtype=np.uint8))
    return [rgb, big, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), Image.new("RGB", (32, 32))]


@pytest.mark.parametrize("kwargs", [
    {"image_size": 224},  # ViT-B/16's eval transform: shortest-side bicubic resize, centre crop
    {"image_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3, "resize_mode": "squash",
     "interpolation": "bilinear"},  # the tests' tiny model
    {"image_size": 128, "resize_mode": "longest", "fill_color": 0},
])
def test_host_then_device_equals_the_whole_transform(kwargs):
    transform = open_clip.image_transform(is_train=False, **kwargs)
    split = split_preprocess(transform)
    assert split is not None
    for image in _images():
        host = split(image)
        assert host.dtype == torch.uint8 and host.shape[0] == 3
        expected = transform(image)
        got = split.finish(host.unsqueeze(0))[0]
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), (kwargs, image.mode, image.size)


def test_a_batch_is_finished_at_once():
    transform = open_clip.image_transform(32, is_train=False)
    split = split_preprocess(transform)
    images = _images()
    batch = split.finish(torch.stack([split(i) for i in images]))
    assert torch.allclose(batch, torch.stack([transform(i) for i in images]), atol=1e-6, rtol=0)


def test_other_transforms_stay_whole():
    assert split_preprocess(T.Compose([T.Resize(8), T.ToTensor()])) is None
    assert split_preprocess(lambda image: image) is None
    assert split_preprocess(T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5])])) is None  # 1 channel


def test_a_served_model_takes_uint8_requests_and_gives_the_whole_transforms_features(colour_versions):
    from service.serving import load_served

    served = load_served(colour_versions / "versions" / "v-colour", "v-colour", 1, "cpu",
                         dtype="float32")
    assert served.device_preprocess is not None
    images = _images()
    split = torch.stack([served.request_transform(i) for i in images])
    whole = torch.stack([served.preprocess(i) for i in images])
    assert split.dtype == torch.uint8 and whole.dtype == torch.float32
    assert torch.allclose(served.encode_images(split), served.encode_images(whole), atol=1e-5)

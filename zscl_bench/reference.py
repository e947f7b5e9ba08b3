"""Reference images for ZSCL's distillation that come from no task of the benchmark.

The paper distils on ImageNet train images: unlabelled, semantically diverse, and from no task of
the sequence. Nothing like ImageNet is reachable here by package name, so the built-in source is
scikit-image's bundled sample photographs (astronaut, cat, coffee, rocket, coins, bricks, grass,
a galaxy field, a retina, text pages, ...), cut into seeded random crops at many scales and aspect
ratios, so every update sees several hundred different natural-image views. Using no task's
images at all (not even train splits) keeps the comparison with the baselines fair: ZSCL gets no
replay of earlier tasks and no peek at later ones. Any folder of images can replace it
(``--reference-images DIR``), e.g. an ImageNet subset where one is at hand.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

from zscl_core import DatasetError, images_from_folder

__all__ = ["PHOTO_FILES", "photo_crops", "reference_items"]

logger = logging.getLogger(__name__)

PHOTO_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
               "motorcycle_right.png", "coins.png", "camera.png", "moon.png", "grass.png",
               "gravel.png", "brick.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
               "cell.png", "page.png", "text.png", "color.png", "logo.png", "horse.png",
               "clock_motion.png", "microaneurysms.png", "chessboard_RGB.png")


def _photos() -> list[Image.Image]:
    try:
        import skimage.data
    except ImportError as exc:
        raise DatasetError("the built-in reference photos need scikit-image; install it with "
                           "`pip install scikit-image`, or pass --reference-images DIR") from exc
    root = Path(skimage.data.__file__).parent
    photos = []
    for name in PHOTO_FILES:
        path = root / name
        if path.is_file():
            with Image.open(path) as img:
                photos.append(img.convert("RGB"))
    if len(photos) < 4:
        raise DatasetError(f"scikit-image's sample photos are missing from {root}; reinstall "
                           "scikit-image or pass --reference-images DIR")
    return photos


def photo_crops(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` seeded random crops (area 5-100 %, aspect 3:4-4:3, random flip) of the sample photos."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]  # round robin: every photo contributes evenly
        w, h = photo.size
        area = rng.uniform(0.05, 1.0) * w * h
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = int(min(w, max(8, round(math.sqrt(area * aspect)))))
        ch = int(min(h, max(8, round(math.sqrt(area / aspect)))))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = photo.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(crop.resize((128, 128), Image.Resampling.BILINEAR))
    return crops


def reference_items(source: str, n: int, seed: int = 0) -> list:
    """Reference image items (PIL images or paths): ``"photos"`` or a folder of images."""
    if source == "photos":
        return photo_crops(n, seed)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"--reference-images must be 'photos' or a folder of images; {folder} "
                           "is not a folder")
    return list(images_from_folder(folder, limit=n, seed=seed).items)

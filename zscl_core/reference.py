"""The reference set of ZSCL's feature distillation: unlabelled images and a fixed list of texts.

The paper distils on ImageNet images against Conceptual Captions sentences; any semantically
diverse images and texts work. The built-in default texts are the ImageNet-1k class names that
open_clip ships, each in one photo template.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from open_clip import IMAGENET_CLASSNAMES
from PIL import Image
from torch.utils.data import Dataset

from .data import IMAGE_SUFFIXES, UnlabelledImages
from .errors import DatasetError

__all__ = ["ReferenceSet", "default_reference_texts", "texts_from_classnames", "texts_from_file",
           "images_from_folder", "list_images", "PHOTO_FILES", "photo_crops"]

DEFAULT_REFERENCE_TEMPLATE = "a photo of a {}."


@dataclass
class ReferenceSet:
    """Images (a dataset yielding ``(tensor, index)``) and the texts they are scored against.

    ``text_features`` optionally holds the teacher's normalised embeddings of ``texts``, one row
    per text. They are the same for every update distilled from the same teacher, so a caller
    running many updates can encode them once (see :func:`encode_texts`) and pass them here.
    """

    images: Dataset
    texts: Sequence[str]
    text_features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise DatasetError("the reference set has no images; point it at a folder of images")
        if len(self.texts) < 2:
            raise DatasetError("the reference set needs at least 2 texts for a distribution")
        if self.text_features is not None and (self.text_features.ndim != 2
                                               or len(self.text_features) != len(self.texts)):
            raise DatasetError(f"text_features must have one row per text ({len(self.texts)}), "
                               f"got shape {tuple(self.text_features.shape)}")


def texts_from_classnames(classnames: Sequence[str],
                          template: str = DEFAULT_REFERENCE_TEMPLATE) -> list[str]:
    """One sentence per class name, e.g. 'a photo of a goldfish.'."""
    return [template.format(name) for name in classnames]


def default_reference_texts(template: str = DEFAULT_REFERENCE_TEMPLATE) -> list[str]:
    """The ImageNet-1k class names (as open_clip ships them) in one template: 1,000 texts."""
    return texts_from_classnames(IMAGENET_CLASSNAMES, template)


def texts_from_file(path: str | Path) -> list[str]:
    """One text per non-empty line of a UTF-8 file (captions, for instance)."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line]
    if len(texts) < 2:
        raise DatasetError(f"{path} holds {len(texts)} non-empty lines; give at least 2 sentences")
    return texts


def list_images(*roots: str | Path) -> list[Path]:
    """Every image file under the given folders (recursively), sorted."""
    return sorted(p for root in roots for p in Path(root).rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def images_from_folder(root: str | Path, transform: Callable | None = None, *,
                       limit: int | None = None, seed: int = 0) -> UnlabelledImages:
    """Every image under ``root`` (recursively, labels ignored), optionally a seeded sample."""
    files = list_images(root)
    if not files:
        raise DatasetError(f"no images under {root}")
    if limit is not None and limit < len(files):
        files = sorted(random.Random(seed).sample(files, limit))
    return UnlabelledImages(files, transform)


# scikit-image's bundled sample photographs (astronaut, cat, coffee, rocket, coins, bricks, grass,
# a galaxy field, a retina, text pages, ...): the one broad set of natural images that installs
# by package name everywhere. Cut into seeded random crops at many scales and aspect ratios they
# give several hundred different views, from no dataset a user trains or evaluates on.
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
                           "`pip install scikit-image`, or give a folder of reference images") from exc
    root = Path(skimage.data.__file__).parent
    photos = []
    for name in PHOTO_FILES:
        path = root / name
        if path.is_file():
            with Image.open(path) as img:
                photos.append(img.convert("RGB"))
    if len(photos) < 4:
        raise DatasetError(f"scikit-image's sample photos are missing from {root}; reinstall "
                           "scikit-image or give a folder of reference images")
    return photos


def photo_crops(n: int, seed: int = 0, size: int = 128) -> list[Image.Image]:
    """``n`` seeded random crops (area 5-100 %, aspect 3:4-4:3, random flip) of the sample
    photos, each resized to ``size`` x ``size``."""
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
        crops.append(crop.resize((size, size), Image.Resampling.BILINEAR))
    return crops

"""Reference images for ZSCL's distillation that come from no task of the benchmark.

The paper distils on ImageNet train images: unlabelled, semantically diverse, and from no task of
the sequence. Nothing like ImageNet is reachable here by package name, so the built-in source is
``zscl_core.reference.photo_crops``: scikit-image's bundled sample photographs cut into seeded
random crops, so every update sees several hundred different natural-image views. Using no task's
images at all (not even train splits) keeps the comparison with the baselines fair: ZSCL gets no
replay of earlier tasks and no peek at later ones. Any folder of images can replace it
(``--reference-images DIR``), e.g. an ImageNet subset where one is at hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zscl_core import DatasetError, images_from_folder
from zscl_core.reference import PHOTO_FILES, photo_crops

__all__ = ["PHOTO_FILES", "photo_crops", "reference_items"]

logger = logging.getLogger(__name__)


def reference_items(source: str, n: int, seed: int = 0) -> list:
    """Reference image items (PIL images or paths): ``"photos"`` or a folder of images."""
    if source == "photos":
        return photo_crops(n, seed)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"--reference-images must be 'photos' or a folder of images; {folder} "
                           "is not a folder")
    return list(images_from_folder(folder, limit=n, seed=seed).items)

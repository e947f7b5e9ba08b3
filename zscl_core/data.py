"""Datasets the library trains and evaluates on: labelled image folders and unlabelled images;
and opening an untrusted image with a cap on its pixels (:func:`open_capped`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "LabelledImages", "UnlabelledImages", "scan_image_folder",
           "class_name_from_folder", "open_capped"]

logger = logging.getLogger(__name__)

_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # "Image size (400000000 pixels) exceeds limit..."
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def class_name_from_folder(folder: str) -> str:
    """Folder names read as class names, '_' as a space ('sea_lion' -> 'sea lion')."""
    return folder.replace("_", " ").strip()


def _load_rgb(item) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    with Image.open(item) as img:
        return img.convert("RGB")


@dataclass
class LabelledImages(Dataset):
    """Images (paths or PIL images) with integer labels into ``classnames``.

    ``transform`` maps a PIL image to a tensor (a model's preprocessing); the dataset yields
    ``(tensor, label)``.
    """

    items: Sequence
    labels: Sequence[int]
    classnames: Sequence[str]
    transform: Callable | None = None

    def __post_init__(self) -> None:
        if len(self.items) != len(self.labels):
            raise DatasetError(f"{len(self.items)} images but {len(self.labels)} labels")
        if len(self.classnames) < 2:
            raise DatasetError(f"a labelled dataset needs at least 2 classes, got {len(self.classnames)}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image = _load_rgb(self.items[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])

    def with_transform(self, transform: Callable | None) -> "LabelledImages":
        return LabelledImages(self.items, self.labels, self.classnames, transform)

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        return LabelledImages([self.items[i] for i in indices], [self.labels[i] for i in indices],
                              self.classnames, self.transform)


@dataclass
class UnlabelledImages(Dataset):
    """Images without labels; yields ``(tensor, index)`` so frozen-model features can be cached."""

    items: Sequence
    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image = _load_rgb(self.items[index])
        return (self.transform(image) if self.transform else image), index


def scan_image_folder(root: str | Path, transform: Callable | None = None,
                      min_per_class: int = 1) -> LabelledImages:
    """A dataset from ``root/<class>/<image>``; class names come from the folder names.

    Raises:
        DatasetError: fewer than 2 classes, or a class with fewer than ``min_per_class`` images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory of class folders")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items, labels, names = [], [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if len(files) < min_per_class:
            raise DatasetError(f"class folder '{folder.name}' has {len(files)} images; each class "
                               f"needs at least {min_per_class}")
        names.append(class_name_from_folder(folder.name))
        items.extend(files)
        labels.extend([label] * len(files))
    if len(names) < 2:
        raise DatasetError(f"{root} has {len(names)} class folder(s); a task needs at least 2")
    return LabelledImages(items, labels, names, transform)


def stack_batch(batch):
    """Collate (tensor, int) pairs into (tensor batch, long tensor)."""
    images, targets = zip(*batch)
    return torch.stack(images), torch.tensor(targets, dtype=torch.long)


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

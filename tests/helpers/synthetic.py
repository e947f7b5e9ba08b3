"""Tiny models, synthetic image tasks and fast hyper-parameters for the tests (CPU, fixed
seeds, seconds to train)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_PREPROCESS = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                   "interpolation": "bilinear", "resize_mode": "squash"}

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30)}
PATTERNS = ("horizontal stripes", "vertical stripes")


def write_tiny_config(directory: Path) -> Path:
    path = Path(directory) / "tiny-clip.json"
    path.write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": TINY_PREPROCESS}))
    return path


def colour_image(rng: np.random.Generator, colour: tuple[int, int, int]) -> Image.Image:
    """A noisy grey background with a large patch of one colour."""
    arr = rng.normal(128, 30, (32, 32, 3))
    x, y = rng.integers(0, 12, 2)
    arr[y:y + 20, x:x + 20] = np.array(colour) + rng.normal(0, 15, (20, 20, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def stripe_image(rng: np.random.Generator, horizontal: bool) -> Image.Image:
    """Black-and-white stripes of a random period and phase, tinted at random."""
    period = int(rng.integers(4, 8))
    phase = int(rng.integers(0, period))
    line = ((np.arange(32) + phase) // (period // 2)) % 2
    grid = np.tile(line[:, None] if horizontal else line[None, :], (1, 32) if horizontal else (32, 1))
    tint = rng.uniform(0.5, 1.0, 3)
    arr = grid[..., None] * 200 * tint + rng.normal(30, 10, (32, 32, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def colour_task(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    items, labels = [], []
    for label, name in enumerate(names):
        for _ in range(n_per_class):
            items.append(colour_image(rng, COLOURS[name]))
            labels.append(label)
    return items, labels, names


def stripe_task(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    items, labels = [], []
    for label, horizontal in enumerate((True, False)):
        for _ in range(n_per_class):
            items.append(stripe_image(rng, horizontal))
            labels.append(label)
    return items, labels, list(PATTERNS)


def reference_images(n: int, seed: int) -> list[Image.Image]:
    """Unlabelled reference images: patches of random colours, from no task's test split."""
    rng = np.random.default_rng(seed)
    return [colour_image(rng, tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(n)]


# tiny-model hyper-parameters that learn stripes in seconds (see tests/core/test_train.py)
FAST_HPARAMS = {"steps": 40, "batch_size": 16, "ref_batch_size": 16, "lr": 2e-3, "warmup_steps": 4,
                "trainable": "image", "l2_weight": 0.0, "ensemble_every": 10,
                "cancel_check_every": 1}

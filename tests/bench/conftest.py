from pathlib import Path

import pytest

from tests.synthetic import colour_task, stripe_task


def write_task_folder(root: Path, generator, n_train: int, n_test: int, seed: int) -> Path:
    """Write a synthetic task as PATH/train/<class>/*.png and PATH/test/<class>/*.png."""
    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 100)):
        items, labels, names = generator(n, seed=split_seed)
        for k, (image, label) in enumerate(zip(items, labels)):
            folder = root / split / names[label].replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{k:04d}.png")
    return root


@pytest.fixture(scope="session")
def task_folders(tmp_path_factory):
    """Two tiny synthetic tasks as image folders: colours (4 classes), stripes (2 classes)."""
    base = tmp_path_factory.mktemp("bench-tasks")
    return (write_task_folder(base / "colours", colour_task, 12, 6, seed=1),
            write_task_folder(base / "stripes", stripe_task, 12, 6, seed=2))

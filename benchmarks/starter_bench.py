"""Zero-shot accuracy, load time and speed of the offline starter model.

Prints CIFAR-10 top-1 on the 10,000 test images of ``../shared/data/cifar10-subset.tar`` (CLIP's
18 CIFAR prompt templates), Fashion-MNIST top-1 on its 10,000 test images (Debian package
``dataset-fashion-mnist``), the time to load the saved starter, and images/s of the starter next
to a ViT-B-32 with random weights, measured in the same run. With each top-1 it prints the
expected calibration error (15 equal-width bins) of the zero-shot probabilities at the starter's
fitted logit scale and at the fixed 100 of the recipes before it; the scale was fitted without
these images, which are only measured here.

    python -m benchmarks.starter_bench [--limit 1000] [--root DIR] [--device cpu]
                                       [--datasets cifar10 fashion-mnist] [--classifier-ceiling]

``--classifier-ceiling`` also prints a diagnostic, not a zero-shot figure: the top-1 of the
ImageNet classifier that ships with the image weights, read through WordNet (a label's score is
the summed probability of the ImageNet classes it covers). It shows how much of each label set
the image tower's own ImageNet knowledge separates, whatever the text side does.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import tarfile
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from timm.data import ImageNetInfo
from torch.utils.data import DataLoader

from zscl_core import (DEFAULT_TEMPLATES, LabelledImages, accuracy_from_features, build_head,
                       encode_images, load_version, scan_image_folder)
from zscl_core.calibration import expected_calibration_error
from zscl_core.data import stack_batch
from zscl_core.starter import ensure_starter, imagenet_classifier, imagenet_hierarchy

logger = logging.getLogger("benchmarks.starter_bench")

REPO = Path(__file__).resolve().parents[1]
CIFAR_TAR = REPO.parent / "shared" / "data" / "cifar10-subset.tar"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
OLD_LOGIT_SCALE = 100.0  # recipes kernel-mlp-v1 and kernel-hierarchy-mlp-v2: CLIP's cap, not fitted
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
# CLIP's CIFAR-10 prompts (Radford et al., 2021, prompt engineering notebook).
CIFAR_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.",
    "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.",
    "a bad photo of the {}.", "a good photo of the {}.", "a photo of the small {}.",
    "a photo of the big {}.",
)


def per_class_subset(labels, limit: int | None) -> list[int]:
    """The first ``limit / classes`` indices of each class (all when limit is None)."""
    if limit is None:
        return list(range(len(labels)))
    classes = sorted(set(labels))
    per = max(1, limit // len(classes))
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(labels):
        if seen.get(y, 0) < per:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return keep


def cifar10_test(workdir: Path, transform, limit: int | None) -> LabelledImages | None:
    if not CIFAR_TAR.is_file():
        return None
    with tarfile.open(CIFAR_TAR) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("cifar10/test/")]
        tar.extractall(workdir, members=members, filter="data")
    data = scan_image_folder(workdir / "cifar10" / "test", transform)
    return data.subset(per_class_subset(data.labels, limit))


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as fh:
        raw = fh.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_test(transform, limit: int | None) -> LabelledImages | None:
    images_path = FASHION_DIR / "t10k-images-idx3-ubyte.gz"
    if not images_path.is_file():
        return None
    images = _idx(images_path)
    labels = _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz").tolist()
    keep = per_class_subset(labels, limit)
    return LabelledImages([Image.fromarray(images[i]) for i in keep], [labels[i] for i in keep],
                          FASHION_CLASSES, transform)


@torch.no_grad()
def images_per_second(model, images: torch.Tensor, repeats: int = 3) -> float:
    model.eval()
    model.encode_image(images[:4])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.encode_image(images)
    return repeats * len(images) / (time.perf_counter() - start)


def zero_shot(loaded, data: LabelledImages, templates, device) -> dict[str, float]:
    """Top-1 (percent), and the ECE (percent) of the zero-shot probabilities at the model's logit
    scale and at the old fixed scale, from one encoding of the images (a scale changes no top-1)."""
    head = build_head(loaded.model, loaded.tokenizer, data.classnames, templates, device=device)
    features, labels = encode_images(loaded.model, data, device=device, batch_size=250)
    cosines = features @ head.to(features.device)
    scale = float(loaded.model.logit_scale.detach().exp())

    def ece(s: float) -> float:
        return 100 * expected_calibration_error((s * cosines).softmax(-1), labels)

    return {"top1": accuracy_from_features(features, labels, head), "scale": scale,
            "ece": ece(scale), "ece_old": ece(OLD_LOGIT_SCALE)}


@lru_cache(maxsize=1)
def _word_index() -> dict[str, frozenset[int]]:
    """Lower-cased word -> the ImageNet classes it covers (read once)."""
    index: dict[str, set[int]] = {}
    for ancestor in imagenet_hierarchy():
        for word in ancestor["lemmas"]:
            index.setdefault(word.lower(), set()).update(ancestor["classes"])
    for k, words in enumerate(ImageNetInfo().label_descriptions(detailed=False)):
        for word in words.split(", "):
            index.setdefault(word.lower(), set()).add(k)
    return {word: frozenset(classes) for word, classes in index.items()}


def wordnet_members(word: str) -> list[int]:
    """The ImageNet classes a label covers: those below each WordNet ancestor that has the label
    as a lemma, and those that have it as a synonym."""
    return sorted(_word_index().get(word.lower(), ()))


@torch.no_grad()
def classifier_ceiling(loaded, data: LabelledImages, device) -> tuple[float, dict[str, int]]:
    """Top-1 of the shipped ImageNet classifier on the starter's trunk, read through WordNet."""
    weight, bias = (t.to(device) for t in imagenet_classifier())
    members = [wordnet_members(c) for c in data.classnames]
    mask = torch.zeros(len(members), len(weight), device=device)
    for label, classes in enumerate(members):
        mask[label, classes] = 1.0
    correct = 0
    for images, labels in DataLoader(data, batch_size=250, collate_fn=stack_batch):
        probs = (loaded.model.visual.trunk(images.to(device)).float() @ weight.T + bias).softmax(-1)
        correct += int(((probs @ mask.T).argmax(1).cpu() == labels).sum())
    return 100 * correct / len(data), {c: len(m) for c, m in zip(data.classnames, members)}


def report(loaded, name: str, data: LabelledImages | None, templates, missing: str,
           device, ceiling: bool = False) -> None:
    if data is None:
        print(f"{name}: skipped ({missing})")
        return
    result = zero_shot(loaded, data, templates, device)
    print(f"{name} zero-shot top-1: {result['top1']:.2f}% on {len(data)} test images "
          f"(the same at any logit scale)")
    print(f"{name} expected calibration error (15 bins): {result['ece']:.2f}% at the starter's "
          f"logit scale {result['scale']:.1f}, {result['ece_old']:.2f}% at the old "
          f"{OLD_LOGIT_SCALE:.0f}")
    if ceiling:
        top1, sizes = classifier_ceiling(loaded, data, device)
        print(f"{name} diagnostic, ImageNet classifier read through WordNet: {top1:.2f}% "
              f"(ImageNet classes per label: {sizes})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate on this many test images per dataset (balanced); default all")
    parser.add_argument("--root", type=Path, default=None,
                        help="version store holding (or to hold) the starter; default a temp dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--datasets", nargs="+", choices=("cifar10", "fashion-mnist"),
                        default=("cifar10", "fashion-mnist"), help="which accuracies to measure")
    parser.add_argument("--classifier-ceiling", action="store_true",
                        help="also print the ImageNet classifier's own top-1 read through WordNet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="starter-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        directory = ensure_starter(args.root or tmp / "versions", device=args.device)
        print(f"starter ready in {time.perf_counter() - start:.1f} s ({directory.name})")
        start = time.perf_counter()
        loaded = load_version(directory, device=args.device)
        print(f"load time of the saved starter: {time.perf_counter() - start:.2f} s")

        if "cifar10" in args.datasets:
            report(loaded, "CIFAR-10", cifar10_test(tmp, loaded.preprocess_val, args.limit),
                   CIFAR_TEMPLATES, f"{CIFAR_TAR} not found", args.device,
                   args.classifier_ceiling)
        if "fashion-mnist" in args.datasets:
            report(loaded, "Fashion-MNIST", fashion_mnist_test(loaded.preprocess_val, args.limit),
                   DEFAULT_TEMPLATES,
                   f"{FASHION_DIR} not found; apt-get install dataset-fashion-mnist", args.device,
                   args.classifier_ceiling)

        # Throughput does not depend on what the pixels show: 32 noise images, each model's
        # own preprocessing.
        photos = [Image.fromarray((np.random.default_rng(i).random((224, 224, 3)) * 255)
                                  .astype(np.uint8)) for i in range(32)]
        vit, _, vit_pre = open_clip.create_model_and_transforms("ViT-B-32", device=args.device)
        starter_batch = torch.stack([loaded.preprocess_val(p) for p in photos]).to(args.device)
        vit_batch = torch.stack([vit_pre(p) for p in photos]).to(args.device)
        starter_speed = images_per_second(loaded.model, starter_batch)
        vit_speed = images_per_second(vit, vit_batch)
        print(f"images/s (batch 32, {args.device}, {torch.get_num_threads()} threads): "
              f"starter {starter_speed:.1f} at {starter_batch.shape[-1]} px, "
              f"ViT-B-32 (random weights) {vit_speed:.1f} at {vit_batch.shape[-1]} px")


if __name__ == "__main__":
    main()

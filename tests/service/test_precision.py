"""Serving precision: the towers in bfloat16 where they agree with float32, features and heads in
float32, and the starter's zero-shot answers at bfloat16 as at float32 on real images.

The starter test classifies 500 CIFAR-10 test images (50 per class; ../shared/data next to the
clone) or, without them, 500 Fashion-MNIST test images (Debian's dataset-fashion-mnist, which
.ci/run installs); it skips only where neither is present outside CI.
"""

import math
import os
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from service.batching import rank
from service.serving import AGREEMENT_COSINE, load_served, lower_precision_
from tests.helpers.colour import SOLID
from zscl_bench.tasks import FASHION_CLASSES, LoadOptions, default_shared_data, load_fashion_mnist
from zscl_core import DEFAULT_TEMPLATES, ConfigError, scan_image_folder

CIFAR_TAR = default_shared_data() / "cifar10-subset.tar"
FASHION = Path("/usr/share/datasets/fashion-mnist")
PER_CLASS = 50
COLOURS = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="module")
def colour_pair(colour_versions):
    path = colour_versions / "versions" / "v-colour"
    return (load_served(path, "v-colour", 1, "cpu", dtype="float32"),
            load_served(path, "v-colour", 1, "cpu", dtype="bfloat16"))


def _solid(served, colours):
    return torch.stack([served.preprocess(Image.new("RGB", (32, 32), SOLID[c])) for c in colours])


def test_bfloat16_serving_gives_float32_normalised_features_and_host_heads(colour_pair):
    full, half = colour_pair
    assert (half.image_dtype, half.text_dtype) == (torch.bfloat16, torch.bfloat16)
    assert half.precision == "bfloat16" and full.precision == "float32"
    assert next(half.model.visual.parameters()).dtype == torch.bfloat16
    assert half.model.logit_scale.dtype == torch.float32
    assert half.logit_scale == pytest.approx(20.0, rel=1e-6) == full.logit_scale

    features = half.encode_images(_solid(half, COLOURS))
    head = half.build_head(COLOURS, ["{}"])
    assert features.dtype == head.dtype == torch.float32 and head.device.type == "cpu"
    assert torch.allclose(features.norm(dim=-1), torch.ones(4), atol=1e-6)
    assert torch.allclose(head.norm(dim=0), torch.ones(4), atol=1e-6)
    # the colour model's answer is fixed by construction: each colour is its own label
    assert [COLOURS[i] for i in (features @ head).argmax(-1)] == COLOURS
    reference = full.encode_images(_solid(full, COLOURS))
    assert torch.nn.functional.cosine_similarity(features, reference).min() > AGREEMENT_COSINE


def test_the_bfloat16_traced_encoder_gives_the_eager_features(colour_pair):
    _, half = colour_pair
    assert half.image_graph is not None and half.image_graph_input == torch.uint8
    pixels = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)  # as requests bring them
    traced = half.image_graph(pixels)
    assert torch.equal(half.encode_images(pixels), traced)
    eager = torch.nn.functional.normalize(
        half.model.encode_image(half.device_preprocess.finish(pixels).bfloat16()).float(), dim=-1)
    # identical here; 1e-2 leaves room for a few bfloat16 roundings (8 bits) should the graph's
    # kernels differ from eager's on another CPU
    assert torch.allclose(traced, eager, atol=1e-2)


def test_an_unknown_precision_is_refused_with_the_choices(colour_versions):
    with pytest.raises(ConfigError, match="float32, bfloat16, float16"):
        load_served(colour_versions / "versions" / "v-colour", "v", 1, "cpu", dtype="float8")


class _CancellingModel(nn.Module):
    """An image tower that adds 256 and takes it away again: exact in float32, but bfloat16 keeps
    8 bits, so 256 + x rounds x to a multiple of 2. Its text tower is a plain embedding."""

    def __init__(self):
        super().__init__()
        self.visual = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.text = nn.Embedding(10, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        with torch.no_grad():
            for layer, bias in zip(self.visual, (256.0, -256.0)):
                layer.weight.copy_(torch.eye(4))
                layer.bias.fill_(bias)

    def encode_image(self, pixels):
        return self.visual(pixels)

    def encode_text(self, tokens):
        return self.text(tokens).mean(dim=1)


def test_a_tower_that_disagrees_in_bfloat16_is_kept_float32_unchanged():
    torch.manual_seed(0)
    model = _CancellingModel()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pixels, tokens = torch.rand(8, 4) + 0.1, torch.randint(0, 10, (8, 5))

    image, text, cosines = lower_precision_(model, torch.bfloat16, pixels, tokens)

    assert (image, text) == (torch.float32, torch.bfloat16)
    assert cosines["image"] < AGREEMENT_COSINE <= cosines["text"]
    for name in ("visual.0.weight", "visual.0.bias", "visual.1.bias", "logit_scale"):
        param = model.get_parameter(name)
        assert param.dtype == torch.float32 and torch.equal(param, before[name])  # restored exactly
    assert model.text.weight.dtype == torch.bfloat16
    assert torch.equal(model.text.weight.float(), before["text.weight"].bfloat16().float())


def _cifar10(tmp_path: Path) -> tuple[list[Image.Image], list[int], list[str]]:
    with tarfile.open(CIFAR_TAR) as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.name.startswith("cifar10/test/") and m.isfile()), key=lambda m: m.name)
        per_class: dict[str, list] = {}
        for member in members:
            per_class.setdefault(Path(member.name).parent.name, []).append(member)
        tar.extractall(tmp_path, members=[m for ms in per_class.values() for m in ms[:PER_CLASS]],
                       filter="data")
    data = scan_image_folder(tmp_path / "cifar10" / "test")
    return [Image.open(p).convert("RGB") for p in data.items], list(data.labels), list(data.classnames)


def _fashion(tmp_path: Path) -> tuple[list[Image.Image], list[int], list[str]]:
    task = load_fashion_mnist(LoadOptions(train_per_class=1, test_per_class=PER_CLASS,
                                          cache_dir=tmp_path), root=FASHION)
    return [im.convert("RGB") for im in task.test.items], list(task.test.labels), FASHION_CLASSES


def _real_images(tmp_path: Path):
    if CIFAR_TAR.is_file():
        return _cifar10(tmp_path)
    if (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        return _fashion(tmp_path)
    if os.environ.get("CI"):
        pytest.fail(f"neither {CIFAR_TAR} nor {FASHION} is here in CI; .ci/run installs "
                    "dataset-fashion-mnist")
    pytest.skip(f"neither {CIFAR_TAR} nor {FASHION} (apt-get install dataset-fashion-mnist)")


def _probabilities(served, images, classnames) -> torch.Tensor:
    """(images, classes) probabilities as the service ranks them, through ``served``."""
    head = served.build_head(classnames, DEFAULT_TEMPLATES)
    rows = []
    for start in range(0, len(images), 50):
        pixels = torch.stack([served.preprocess(im) for im in images[start:start + 50]])
        for ranked in rank(served, served.encode_images(pixels), head, top_k=len(classnames)):
            rows.append([p for _, p in sorted(ranked)])
    return torch.tensor(rows)


@pytest.mark.slow
def test_the_starter_answers_alike_in_bfloat16_and_float32(starter_dir, tmp_path):
    images, labels, classnames = _real_images(tmp_path)
    assert len(images) == 10 * PER_CLASS and len(classnames) == 10
    full = load_served(starter_dir, starter_dir.name, 1, "cpu", dtype="float32")
    half = load_served(starter_dir, starter_dir.name, 1, "cpu", dtype="bfloat16")
    # the EfficientNet image tower fails the agreement check in bfloat16 and stays float32
    # (cast: 97.0% top-1 agreement here, max |dp| 0.19); the MiniLM text tower passes
    assert (half.image_dtype, half.text_dtype) == (torch.float32, torch.bfloat16)

    p32, p16 = _probabilities(full, images, classnames), _probabilities(half, images, classnames)

    agreement = (p16.argmax(-1) == p32.argmax(-1)).float().mean().item()
    worst = (p16 - p32).abs().max().item()
    print(f"top-1 agreement {agreement:.4f}, max |p_bf16 - p_fp32| {worst:.4f}, "
          f"fp32 top-1 {(p32.argmax(-1) == torch.tensor(labels)).float().mean().item():.3f}")
    assert agreement >= 0.99
    assert worst <= 0.02

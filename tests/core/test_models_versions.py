import json
import logging
import re

import pytest
import torch

from tests.helpers.synthetic import TINY_CFG, colour_image
from zscl_core import (ConfigError, ModelLoadError, VersionIntegrityError, build_head, check_template,
                       list_versions, load_model, save_version)
from zscl_core.versions import WEIGHTS_NAME, read_manifest


def _logits(loaded, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    images = torch.stack([loaded.preprocess_val(colour_image(rng, (200, 10, 10))) for _ in range(3)])
    head = build_head(loaded.model, loaded.tokenizer, ["red", "green", "blue"], ["a {} photo."])
    with torch.no_grad():
        return loaded.model.encode_image(images, normalize=True) @ head


def test_config_json_builds_the_tiny_architecture(tiny):
    assert tiny.model.visual.image_size == (32, 32)
    assert tiny.spec["model_cfg"]["embed_dim"] == TINY_CFG["embed_dim"]
    assert tiny.spec["preprocess_cfg"]["size"] in (32, [32, 32])
    assert tiny.tokenizer(["a photo"]).shape == (1, 16)


def test_save_load_gives_identical_logits(tiny, tmp_path):
    vid = save_version(tmp_path, tiny.model, tiny.spec, parent=None, metadata={"note": "t"})
    loaded = load_model(tmp_path / vid)
    assert loaded.version == vid
    assert loaded.manifest["zscl"]["metadata"] == {"note": "t"}
    assert torch.equal(_logits(tiny), _logits(loaded))
    child = save_version(tmp_path, loaded.model, loaded.spec, parent=vid)
    assert read_manifest(tmp_path / child)["zscl"]["parent"] == vid
    assert [v["version"] for v in list_versions(tmp_path)] == [vid, child]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_loading_a_version_does_not_claim_random_weights(tiny, tmp_path, caplog):
    # open_clip builds the bare architecture first and says "No pretrained weights loaded ...
    # initialized randomly"; the version's weights load right after, so that would be false
    vid = save_version(tmp_path, tiny.model, tiny.spec)
    with caplog.at_level(logging.INFO):
        loaded = load_model(tmp_path / vid)
    assert torch.equal(_logits(tiny), _logits(loaded))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if "initialized randomly" in m or "no CLIP weights" in m], said
    other = logging.getLogger("elsewhere")
    with caplog.at_level(logging.WARNING):
        other.warning("No pretrained weights loaded for model 'x'")  # the filter was only temporary
        logging.warning("No pretrained weights loaded for model 'y'")
    assert sum("No pretrained weights" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("template", ["{} {x}", "{0}{}", "{.__class__}{}", "{} {", "{{}}", "{!r}",
                                      "{:>9}", "}{}", "no slot", ""])
def test_a_template_needs_exactly_one_plain_slot(tiny, template):
    with pytest.raises(ConfigError, match=re.escape(f"template {template!r}")):
        check_template(template)
    with pytest.raises(ConfigError, match="exactly one '{}'"):
        build_head(tiny.model, tiny.tokenizer, ["red"], ["a {}", template])


def test_good_templates_pass_unchanged():
    for template in ("{}", "a photo of a {}.", "{{literal}} {}", "{} }}"):
        assert check_template(template) == template


def test_tampered_weights_are_refused(tiny, tmp_path):
    vid = save_version(tmp_path, tiny.model, tiny.spec)
    weights = tmp_path / vid / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VersionIntegrityError, match="were modified"):
        load_model(tmp_path / vid)


def test_missing_key_is_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file
    from zscl_core.versions import sha256_file
    vid = save_version(tmp_path, tiny.model, tiny.spec)
    weights = tmp_path / vid / WEIGHTS_NAME
    state = load_file(str(weights))
    state.pop("text_projection")
    save_file(state, str(weights))
    manifest_path = tmp_path / vid / "open_clip_config.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["zscl"]["weights_sha256"] = sha256_file(weights)
    manifest_path.write_text(json.dumps(manifest))
    # checksums consistent with the edit: the version is whole, just not this architecture's
    (tmp_path / vid / "checksums.sha256").write_text(
        f"{sha256_file(manifest_path)}  open_clip_config.json\n{sha256_file(weights)}  {WEIGHTS_NAME}\n")
    with pytest.raises(VersionIntegrityError, match="missing keys.*text_projection"):
        load_model(tmp_path / vid)


def test_not_a_version_directory(tmp_path):
    with pytest.raises(VersionIntegrityError, match="not a saved version"):
        load_model(tmp_path)


def test_checkpoint_file_with_config(tiny, tiny_config_path, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": tiny.model.state_dict()}, ckpt)
    loaded = load_model(tiny_config_path, pretrained=str(ckpt))
    assert torch.equal(_logits(tiny), _logits(loaded))


def test_open_clip_name_with_local_checkpoint(tmp_path):
    # the real named-model path, with a checkpoint the test saves (no hub here)
    torch.manual_seed(0)
    first = load_model("RN50")
    ckpt = tmp_path / "rn50.pt"
    torch.save(first.model.state_dict(), ckpt)
    second = load_model("RN50", pretrained=str(ckpt))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(first.model.encode_image(x), second.model.encode_image(x))


def test_unknown_sources_say_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="list_models"):
        load_model("ViT-Nonexistent-99")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.json")
    with pytest.raises(ModelLoadError, match="known pretrained tag|checkpoint path|unreachable"):
        load_model("RN50", pretrained="no-such-tag")

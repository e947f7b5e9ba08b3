"""A version's manifest is hostile input: it is covered by the version's checksum, and checked
against bounds and a memory estimate before any model is built.

"No model built" is observed, not mocked: open_clip logs "Attempting to load config from
local-dir" (INFO) whenever the project builds an architecture; a refused manifest never gets
there.
"""

import json
import logging

import pytest
import torch

from tests.helpers.synthetic import TINY_CFG, TINY_PREPROCESS
from zscl_core import ModelLoadError, VersionIntegrityError, build_from_spec, load_version, save_version
from zscl_core import versions
from zscl_core.models import MANIFEST_NAME

TINY_SPEC = {"model_cfg": TINY_CFG, "preprocess_cfg": TINY_PREPROCESS}


@pytest.fixture()
def saved(tiny, tmp_path):
    return tmp_path / save_version(tmp_path, tiny.model, tiny.spec)


def _edit(version_dir, change) -> None:
    path = version_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _as_legacy(version_dir) -> None:
    """What save_version wrote before manifests were checksummed: the manifest and the weights
    alone, the manifest naming no checksum file."""
    for path in version_dir.iterdir():
        if path.name not in (MANIFEST_NAME, versions.WEIGHTS_NAME):
            path.unlink()
    _edit(version_dir, lambda m: m["zscl"].pop("checksums", None))


def _built_a_model(caplog) -> bool:
    return any("Attempting to load config from local-dir" in r.getMessage() for r in caplog.records)


TAMPERINGS = {
    "huge-image-size": lambda m: m["model_cfg"]["vision_cfg"].update(image_size=100_000),
    "embed-dim": lambda m: m["model_cfg"].update(embed_dim=48),
    "unknown-timm-model": lambda m: m["model_cfg"]["vision_cfg"].update(timm_model_name="no_such_net_v9"),
}


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_a_tampered_manifest_is_refused_as_tampered_before_any_model_is_built(saved, caplog, case):
    _edit(saved, TAMPERINGS[case])
    with caplog.at_level(logging.INFO), pytest.raises(VersionIntegrityError) as caught:
        load_version(saved)
    assert f"manifest of version {saved.name} was modified" in str(caught.value)
    assert "restore it or activate another version" in str(caught.value)
    assert not _built_a_model(caplog)


def test_non_utf8_manifest_bytes_are_refused_as_tampered(saved, caplog):
    path = saved / MANIFEST_NAME
    path.write_bytes(b"\xff\xfe" + path.read_bytes()[2:])
    with caplog.at_level(logging.INFO), pytest.raises(VersionIntegrityError, match="was modified"):
        load_version(saved)
    assert not _built_a_model(caplog)


def test_checksums_list_both_files_in_sha256sum_format(saved):
    from zscl_core.versions import WEIGHTS_NAME, sha256_file
    lines = (saved / versions.CHECKSUMS_NAME).read_text().splitlines()
    assert lines == [f"{sha256_file(saved / MANIFEST_NAME)}  {MANIFEST_NAME}",
                     f"{sha256_file(saved / WEIGHTS_NAME)}  {WEIGHTS_NAME}"]


def test_a_new_version_without_its_checksum_file_is_refused(saved):
    (saved / versions.CHECKSUMS_NAME).unlink()
    with pytest.raises(VersionIntegrityError, match=f"{versions.CHECKSUMS_NAME} is missing"):
        load_version(saved)


# --- versions saved before manifests were checksummed ------------------------------------------


def test_a_legacy_version_still_loads_with_the_same_weights(tiny, saved, caplog):
    _as_legacy(saved)
    with caplog.at_level(logging.INFO):
        loaded = load_version(saved)
    assert _built_a_model(caplog)  # the detector the refusals rely on does see a build
    assert "predates manifest checksums" in caplog.text
    for key, value in tiny.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


LEGACY_TAMPERINGS = {
    "huge-image-size": (TAMPERINGS["huge-image-size"], ModelLoadError,
                        "vision_cfg.image_size must be in [1, 4096], got 100000"),
    "unknown-timm-model": (TAMPERINGS["unknown-timm-model"], ModelLoadError,
                           "vision_cfg.timm_model_name 'no_such_net_v9' is not a timm model"),
    "unknown-key": (lambda m: m["model_cfg"]["text_cfg"].update(hidden=7), ModelLoadError,
                    "text_cfg has unknown keys ['hidden']"),
    "heads-not-dividing-width": (lambda m: m["model_cfg"]["text_cfg"].update(heads=3), ModelLoadError,
                                 "text_cfg.width (64) must be a multiple of text_cfg.heads (3)"),
    "bool-as-int": (lambda m: m["model_cfg"]["text_cfg"].update(layers=True), ModelLoadError,
                    "text_cfg.layers must be an integer, got True"),
    "huge-vocab": (lambda m: m["model_cfg"]["text_cfg"].update(vocab_size=10**12), ModelLoadError,
                   "text_cfg.vocab_size must be in [1, 1000000]"),
    "huge-preprocess-size": (lambda m: m["preprocess_cfg"].update(size=[100_000, 100_000]), ModelLoadError,
                             "preprocess_cfg.size must be in [1, 4096]"),
    "not-an-object": (lambda m: m.update(model_cfg=[1, 2]), ModelLoadError, "model_cfg must be an object"),
    "list-for-a-choice": (lambda m: m["model_cfg"]["vision_cfg"].update(timm_proj=["linear"]),
                          ModelLoadError, "vision_cfg.timm_proj must be one of"),
    "number-for-a-name": (lambda m: m["model_cfg"]["text_cfg"].update(hf_model_name=5), ModelLoadError,
                          "text_cfg.hf_model_name must be a string"),
    "nan-logit-scale": (lambda m: m["model_cfg"].update(init_logit_scale=float("nan")), ModelLoadError,
                        "model_cfg.init_logit_scale must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(LEGACY_TAMPERINGS))
def test_a_legacy_manifest_out_of_bounds_is_refused_naming_the_field(saved, caplog, case):
    change, error, message = LEGACY_TAMPERINGS[case]
    _as_legacy(saved)
    _edit(saved, change)
    with caplog.at_level(logging.INFO), pytest.raises(error) as caught:
        load_version(saved)
    assert message in str(caught.value)
    assert not _built_a_model(caplog)


def test_a_legacy_manifest_in_bounds_but_not_fitting_the_weights_is_an_integrity_error(saved):
    _as_legacy(saved)
    _edit(saved, TAMPERINGS["embed-dim"])
    with pytest.raises(VersionIntegrityError, match="(?s)does not fit its architecture.*size mismatch for text_projection"):
        load_version(saved)


def test_a_legacy_manifest_that_is_not_utf8_is_refused(saved):
    _as_legacy(saved)
    path = saved / MANIFEST_NAME
    path.write_bytes(b"\xff\xfe" + path.read_bytes()[2:])
    with pytest.raises(VersionIntegrityError, match="is not UTF-8 JSON"):
        load_version(saved)


# --- the memory estimate -----------------------------------------------------------------------


def test_the_estimate_counts_the_tiny_models_parameters(tiny):
    from zscl_core.specs import estimate_bytes
    params = sum(p.numel() for p in tiny.model.parameters())
    estimate = estimate_bytes(TINY_SPEC["model_cfg"])
    assert estimate.parameters == pytest.approx(params, rel=0.01)
    assert estimate.total == estimate.parameters * 4 + estimate.activations
    assert 0 < estimate.activations < estimate.parameters * 4  # one 32 px image is small


def test_a_spec_over_the_memory_cap_is_refused_before_it_is_built(caplog):
    wide = json.loads(json.dumps(TINY_SPEC))
    wide["model_cfg"]["vision_cfg"].update(width=4096, layers=48, head_width=64)
    with caplog.at_level(logging.INFO), pytest.raises(ModelLoadError) as caught:
        build_from_spec(wide)
    # 48 blocks of (4 + 2 * 4) * 4096^2 + 13 * 4096 parameters = 9.666e9, plus the tiny rest,
    # times 4 bytes: 38.7 GB
    assert "would need about 38.7 GB (9,670,505,217 parameters" in str(caught.value)
    assert "the cap is 16.0 GB" in str(caught.value)
    assert not _built_a_model(caplog)
    with pytest.raises(ModelLoadError, match="the cap is 0.0 GB"):
        build_from_spec(TINY_SPEC, max_bytes=1000)


def test_the_starter_spec_passes_and_its_estimate_matches_the_built_model():
    from zscl_core.specs import estimate_bytes
    from zscl_core.starter import starter_spec
    spec = starter_spec()
    estimate = estimate_bytes(spec["model_cfg"])
    model = build_from_spec(spec)[0]
    params = sum(p.numel() for p in model.parameters())
    assert estimate.parameters == pytest.approx(params, rel=0.02)

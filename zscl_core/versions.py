"""Saved model versions: safetensors weights plus a JSON manifest, written atomically.

A version is a directory ``<root>/<version_id>/`` holding
- ``open_clip_model.safetensors``: the full state dict;
- ``open_clip_config.json``: the manifest: ``model_cfg`` and ``preprocess_cfg`` (so open_clip's own
  ``local-dir:`` loader reads it too) and a ``zscl`` section with the version id, the parent
  version, the sha256 of the weights, the creation time and free-form metadata.

Writes go to a temporary directory that is fsynced and then renamed into place, so a reader sees
a whole version or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import VersionIntegrityError
from .models import MANIFEST_NAME, LoadedModel, build_from_spec

__all__ = ["save_version", "load_version", "read_manifest", "list_versions", "sha256_file"]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "open_clip_model.safetensors"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_version(root: str | Path, model: nn.Module, spec: dict[str, Any], *,
                 parent: str | None = None, metadata: dict[str, Any] | None = None,
                 version_id: str | None = None) -> str:
    """Write a model as a new version under ``root``; returns its id.

    Args:
        root: the version store directory (created if missing).
        model: the module whose ``state_dict`` is saved.
        spec: the architecture, as in :attr:`LoadedModel.spec`.
        parent: the id of the version this one was trained from.
        metadata: JSON-serialisable extras (method, metrics...).
        version_id: the id to use; by default ``v-<date>-<time>-<6 random hex>``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        weights = tmp / WEIGHTS_NAME
        save_file(_untie(state), str(weights))
        digest = sha256_file(weights)
        version_id = version_id or f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        manifest = {
            "model_cfg": spec["model_cfg"],
            "preprocess_cfg": spec.get("preprocess_cfg", {}),
            "zscl": {"version": version_id, "parent": parent, "weights_sha256": digest,
                     "created_at": time.time(), "metadata": metadata or {}},
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for path in (weights, tmp / MANIFEST_NAME, tmp):
            _fsync_path(path)
        final = root / version_id
        if final.exists():
            raise FileExistsError(f"version {version_id} already exists in {root}")
        os.rename(tmp, final)
        _fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved version %s (parent %s)", version_id, parent)
    return version_id


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors sharing memory (tied weights); store each as its own copy.
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else None
        if ptr is not None and ptr in seen:
            value = value.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = value
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the version in directory ``path``."""
    manifest_path = Path(path) / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError as exc:
        raise VersionIntegrityError(f"{path} is not a saved version (no {MANIFEST_NAME}); "
                                    f"pick a directory listed by list_versions()") from exc
    except json.JSONDecodeError as exc:
        raise VersionIntegrityError(f"manifest {manifest_path} is corrupt: {exc}") from exc
    if "zscl" not in manifest or "weights_sha256" not in manifest["zscl"]:
        raise VersionIntegrityError(f"manifest {manifest_path} lacks the zscl section; it was "
                                    f"not written by save_version")
    return manifest


def load_version(path: str | Path, device: str | torch.device = "cpu",
                 verify: bool = True) -> LoadedModel:
    """Load a saved version, checking the weights' sha256 and every key (strict).

    Raises:
        VersionIntegrityError: the manifest is missing or corrupt, the weights do not match their
            recorded hash, or keys are missing or unexpected.
    """
    path = Path(path)
    manifest = read_manifest(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise VersionIntegrityError(f"version {path.name} has no weights file {WEIGHTS_NAME}")
    expected = manifest["zscl"]["weights_sha256"]
    if verify and (actual := sha256_file(weights)) != expected:
        raise VersionIntegrityError(
            f"weights of version {path.name} were modified (sha256 {actual[:12]}..., manifest "
            f"says {expected[:12]}...); restore the file or activate another version")
    model, pre_train, pre_val, tokenizer = build_from_spec(manifest, device)
    state = load_file(str(weights), device=str(device))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise VersionIntegrityError(
            f"version {path.name} does not fit its architecture: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}")
    model.eval()
    spec = {"model_cfg": manifest["model_cfg"], "preprocess_cfg": manifest["preprocess_cfg"]}
    return LoadedModel(model, pre_train, pre_val, tokenizer, spec,
                       version=manifest["zscl"]["version"], manifest=manifest)


def list_versions(root: str | Path) -> list[dict[str, Any]]:
    """Manifests' zscl sections of every complete version under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or not (entry / MANIFEST_NAME).is_file():
            continue
        try:
            found.append(read_manifest(entry)["zscl"])
        except VersionIntegrityError:
            logger.warning("skipping unreadable version directory %s", entry)
    return sorted(found, key=lambda z: z["created_at"])

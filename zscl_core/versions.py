"""Saved model versions: safetensors weights plus a JSON manifest, written atomically.

A version is a directory ``<root>/<version_id>/`` holding
- ``open_clip_model.safetensors``: the full state dict;
- ``open_clip_config.json``: the manifest: ``model_cfg`` and ``preprocess_cfg`` (so open_clip's own
  ``local-dir:`` loader reads it too) and a ``zscl`` section with the version id, the parent
  version, the sha256 of the weights, the name of the checksum file, the creation time and
  free-form metadata;
- ``checksums.sha256``: the sha256 of the manifest and of the weights, in ``sha256sum`` format
  (``sha256sum -c checksums.sha256`` checks a version by hand).

Loading checks the checksums before it reads anything else, then the manifest's schema, bounds
and memory estimate (:mod:`zscl_core.specs`), then builds the model. A version saved before the
checksum file existed (its manifest names none) still loads: its weights are checked against the
manifest's hash as they always were, and its manifest against the schema and bounds only.
(A checksum is an integrity check, not a signature: it catches edits, corruption and truncation,
not someone who rewrites the checksum file too.)

Writes go to a temporary directory that is fsynced and then renamed into place, so a reader sees
a whole version or none. The temporary directory is locked while it is written
(:mod:`zscl_core.tempdirs`): one a killed process left is removed at the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import VersionIntegrityError
from .models import MANIFEST_NAME, LoadedModel, build_from_spec
from .specs import DEFAULT_MAX_MODEL_BYTES
from .tempdirs import fsync_path, locked_temp_dir

__all__ = ["save_version", "load_version", "read_manifest", "list_versions", "sha256_file",
           "CHECKSUMS_NAME", "WEIGHTS_NAME"]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "open_clip_model.safetensors"
CHECKSUMS_NAME = "checksums.sha256"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
    # locked while it is written: a restart removes it if this process dies (remove_unlocked_temp_dirs)
    with locked_temp_dir(root) as tmp:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        weights = tmp / WEIGHTS_NAME
        save_file(_untie(state), str(weights))
        digest = sha256_file(weights)
        version_id = version_id or f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        manifest = {
            "model_cfg": spec["model_cfg"],
            "preprocess_cfg": spec.get("preprocess_cfg", {}),
            "zscl": {"version": version_id, "parent": parent, "weights_sha256": digest,
                     "checksums": CHECKSUMS_NAME, "created_at": time.time(),
                     "metadata": metadata or {}},
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        sums = {MANIFEST_NAME: sha256_file(tmp / MANIFEST_NAME), WEIGHTS_NAME: digest}
        (tmp / CHECKSUMS_NAME).write_text("".join(f"{h}  {name}\n" for name, h in sums.items()))
        for path in (weights, tmp / MANIFEST_NAME, tmp / CHECKSUMS_NAME, tmp):
            fsync_path(path)
        final = root / version_id
        if final.exists():
            raise FileExistsError(f"version {version_id} already exists in {root}")
        os.rename(tmp, final)
        fsync_path(root)
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
    """The manifest of the version in directory ``path`` (parsed, not checked against its
    checksum: :func:`load_version` does that)."""
    return _parse_manifest(_manifest_bytes(Path(path)), Path(path) / MANIFEST_NAME)


def _manifest_bytes(path: Path) -> bytes:
    try:
        return (path / MANIFEST_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise VersionIntegrityError(f"{path} is not a saved version (no {MANIFEST_NAME}); "
                                    f"pick a directory listed by list_versions()") from exc


def _parse_manifest(data: bytes, manifest_path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise VersionIntegrityError(f"manifest {manifest_path} is not UTF-8 JSON ({exc}); restore "
                                    f"it or activate another version") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise VersionIntegrityError(f"manifest {manifest_path} is corrupt: {exc}") from exc
    zscl = manifest.get("zscl") if isinstance(manifest, dict) else None
    if not isinstance(zscl, dict) or not isinstance(zscl.get("weights_sha256"), str):
        raise VersionIntegrityError(f"manifest {manifest_path} lacks the zscl section; it was "
                                    f"not written by save_version")
    if not isinstance(zscl.get("version"), str) or not isinstance(zscl.get("created_at"), (int, float)):
        raise VersionIntegrityError(f"manifest {manifest_path} has no version id or creation time "
                                    f"in its zscl section; restore it or activate another version")
    return manifest


def _read_checksums(path: Path) -> dict[str, str] | None:
    """{file name: sha256} from the version's checksum file; None when there is none."""
    try:
        text = (path / CHECKSUMS_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, OSError) as exc:
        raise VersionIntegrityError(f"{CHECKSUMS_NAME} of version {path.name} is unreadable "
                                    f"({exc}); restore it or activate another version") from exc
    sums = {}
    for line in text.splitlines():  # sha256sum's format: "<hex>  <file name>"
        digest, _, name = line.partition("  ")
        sums[name] = digest
    if set(sums) != {MANIFEST_NAME, WEIGHTS_NAME}:
        raise VersionIntegrityError(f"{CHECKSUMS_NAME} of version {path.name} must list "
                                    f"{MANIFEST_NAME} and {WEIGHTS_NAME}, lists {sorted(sums)}; "
                                    f"restore it or activate another version")
    return sums


def _verified_manifest(path: Path, verify: bool) -> dict[str, Any]:
    """The manifest, after its checksum (if the version has one) matched; raises
    VersionIntegrityError otherwise."""
    data = _manifest_bytes(path)
    sums = _read_checksums(path) if verify else None
    if sums is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sums[MANIFEST_NAME]:
            raise VersionIntegrityError(
                f"manifest of version {path.name} was modified (sha256 {actual[:12]}..., "
                f"{CHECKSUMS_NAME} says {sums[MANIFEST_NAME][:12]}...); restore it or activate "
                f"another version")
    manifest = _parse_manifest(data, path / MANIFEST_NAME)
    if verify and sums is None:
        if manifest["zscl"].get("checksums"):
            raise VersionIntegrityError(f"{CHECKSUMS_NAME} is missing from version {path.name}, "
                                        f"whose manifest names it; restore it or activate another "
                                        f"version")
        logger.warning("version %s predates manifest checksums: its manifest is checked against "
                       "bounds only (save it again to cover the manifest too)", path.name)
    if sums is not None and sums[WEIGHTS_NAME] != manifest["zscl"]["weights_sha256"]:
        raise VersionIntegrityError(f"{CHECKSUMS_NAME} and the manifest of version {path.name} "
                                    f"disagree on the weights' sha256; restore the version or "
                                    f"activate another")
    return manifest


def load_version(path: str | Path, device: str | torch.device = "cpu", verify: bool = True,
                 max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> LoadedModel:
    """Load a saved version: checksums, then the manifest's checks, then the model (strict keys).

    Args:
        path: the version directory.
        device: where to put the model.
        verify: check the manifest's and the weights' sha256 (off only for trusted copies).
        max_bytes: the memory cap of the model's estimate (:func:`zscl_core.specs.check_spec`).

    Raises:
        VersionIntegrityError: the manifest is missing, corrupt or modified, the weights do not
            match their recorded hash, or keys or shapes do not fit the architecture.
        ModelLoadError: the manifest asks for an architecture out of bounds, over the memory cap,
            or with a tower that does not exist here (the message names the field).
    """
    path = Path(path)
    manifest = _verified_manifest(path, verify)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise VersionIntegrityError(f"version {path.name} has no weights file {WEIGHTS_NAME}")
    expected = manifest["zscl"]["weights_sha256"]
    if verify and (actual := sha256_file(weights)) != expected:
        raise VersionIntegrityError(
            f"weights of version {path.name} were modified (sha256 {actual[:12]}..., manifest "
            f"says {expected[:12]}...); restore the file or activate another version")
    model, pre_train, pre_val, tokenizer = build_from_spec(manifest, device, max_bytes=max_bytes)
    state = load_file(str(weights), device=str(device))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the architecture's
        raise VersionIntegrityError(f"version {path.name} does not fit its architecture: "
                                    f"{str(exc)[:500]}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise VersionIntegrityError(
            f"version {path.name} does not fit its architecture: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}")
    model.eval()
    spec = {"model_cfg": manifest["model_cfg"], "preprocess_cfg": manifest.get("preprocess_cfg", {})}
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

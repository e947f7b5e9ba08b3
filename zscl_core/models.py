"""Loading CLIP models from every source the project supports, through open_clip.

Sources, one function (:func:`load_model`):
- an open_clip model name with a pretrained tag (``"ViT-B-16", pretrained="openai"``; downloads
  where the model hub is reachable) or a local checkpoint file (``pretrained="/path/ckpt.pt"``);
- a model config JSON file (a custom or tiny architecture), optionally with a checkpoint;
- a directory holding a saved project version (see :mod:`zscl_core.versions`).

Every source returns a :class:`LoadedModel` whose ``spec`` is enough to rebuild the architecture
later, so any model can be saved as a version and reloaded with nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from torch import nn

from .errors import ModelLoadError
from .specs import DEFAULT_MAX_MODEL_BYTES, check_spec, resolve_package_path

__all__ = ["LoadedModel", "build_from_spec", "load_named", "load_config_file", "resolve_package_path"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "open_clip_config.json"  # open_clip's own local-dir config name: versions load there too


@dataclass
class LoadedModel:
    """A model with what it needs to be used and saved.

    Attributes:
        model: the open_clip CLIP module (eval mode).
        preprocess_train: train-time image transform (with augmentation).
        preprocess_val: eval-time image transform.
        tokenizer: callable mapping a list of strings to token ids.
        spec: ``{"model_cfg": ..., "preprocess_cfg": ...}``: the architecture, JSON-serialisable.
        version: the id of the saved version it came from, if any.
        manifest: the saved version's manifest, if any.
    """

    model: nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable
    spec: dict[str, Any]
    version: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def _resolved_cfg(model_cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if isinstance(text_cfg.get(key), str):
            text_cfg[key] = resolve_package_path(text_cfg[key])
    return cfg


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextlib.contextmanager
def _no_weight_warnings() -> Iterator[None]:
    """Silence open_clip's warnings that no CLIP weights were loaded, for the duration.

    :func:`build_from_spec` builds an architecture from a config alone, on purpose: every caller
    loads weights right after (a saved version, the starter, a checkpoint), and loading a bare
    config reports random weights itself. open_clip would log "No pretrained weights loaded ...
    Model initialized randomly" on every start, which is false and alarming. It logs through the
    root logger, so the filter sits there, matching those messages only.
    """
    quiet = _DropMessages("No pretrained weights loaded for model",
                          "Local config loaded, but no CLIP weights found",
                          "Model local-dir:")  # "... initialized partially." (tower weights only)
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def build_from_spec(spec: dict[str, Any], device: str | torch.device = "cpu", *,
                    max_bytes: int = DEFAULT_MAX_MODEL_BYTES
                    ) -> tuple[nn.Module, Callable, Callable, Callable]:
    """Build an architecture (random or tower-pretrained weights) from a spec.

    The spec is checked first (:func:`zscl_core.specs.check_spec`: schema, bounds, named towers,
    memory estimate against ``max_bytes``); nothing is built from one that fails.

    Returns (model, preprocess_train, preprocess_val, tokenizer). No CLIP checkpoint is loaded:
    the caller loads its weights (open_clip's "initialized randomly" warning is silenced).

    Raises:
        ModelLoadError: the spec is off (the message names the field) or open_clip refused it.
    """
    check_spec(spec, max_bytes)
    resolved = {"model_cfg": _resolved_cfg(spec["model_cfg"]),
                "preprocess_cfg": spec.get("preprocess_cfg", {})}
    # open_clip builds custom architectures through its 'local-dir:' schema; a directory with
    # only the config (no weights) gives the bare architecture.
    text_cfg = resolved["model_cfg"]["text_cfg"]
    with tempfile.TemporaryDirectory(prefix="zscl-spec-") as tmp:
        (Path(tmp) / MANIFEST_NAME).write_text(json.dumps(resolved))
        try:
            # open_clip ignores text_cfg.hf_model_pretrained unless told through pretrained_text:
            # a saved version sets it to false so reloading never reads the tower weights twice.
            with _no_weight_warnings():
                model, pre_train, pre_val = open_clip.create_model_and_transforms(
                    f"local-dir:{tmp}", load_weights=False, device=device,
                    pretrained_text=bool(text_cfg.get("hf_model_pretrained", True)))
            tokenizer = _tokenizer_for(text_cfg, tmp)
        # AssertionError: open_clip and torch assert on some shapes the schema cannot foresee
        except (ValueError, RuntimeError, KeyError, TypeError, OSError, AssertionError) as exc:
            raise ModelLoadError(f"could not build the model from its config: {exc}") from exc
    model.eval()
    return model, pre_train, pre_val, tokenizer


def _tokenizer_for(text_cfg: dict[str, Any], config_dir: str) -> Callable:
    # With 'local-dir:' open_clip looks for Hugging Face tokenizer files next to the config;
    # they live where hf_tokenizer_name points (e.g. an installed package), so load from there.
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=text_cfg.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH),
            tokenizer_mode=text_cfg.get("tokenizer_mode"), **text_cfg.get("tokenizer_kwargs", {}))
    return open_clip.get_tokenizer(f"local-dir:{config_dir}")


def _spec_of(model: nn.Module, model_cfg: dict[str, Any]) -> dict[str, Any]:
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    for key, value in preprocess_cfg.items():
        if isinstance(value, tuple):
            preprocess_cfg[key] = list(value)
    return {"model_cfg": copy.deepcopy(model_cfg), "preprocess_cfg": preprocess_cfg}


def load_named(name: str, pretrained: str | None, device, cache_dir: str | None) -> LoadedModel:
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ModelLoadError(f"unknown open_clip model '{name}'; choose one of "
                             f"open_clip.list_models(), or pass a config JSON path")
    model_cfg = copy.deepcopy(model_cfg)
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    if tag_cfg.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    try:
        model, pre_train, pre_val = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device, cache_dir=cache_dir,
            force_quick_gelu=bool(model_cfg.get("quick_gelu")))
    except RuntimeError as exc:
        hint = ("the model hub is unreachable from here; download the checkpoint elsewhere and "
                "pass its file path as pretrained" if tag_cfg else
                "pass a known pretrained tag (open_clip.list_pretrained()) or a checkpoint path")
        raise ModelLoadError(f"could not load {name} pretrained={pretrained!r}: {exc}; {hint}") from exc
    model.eval()
    return LoadedModel(model, pre_train, pre_val, open_clip.get_tokenizer(name),
                       _spec_of(model, model_cfg))


def load_config_file(path: Path, pretrained: str | None, device) -> LoadedModel:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"could not read model config {path}: {exc}") from exc
    spec = raw if "model_cfg" in raw else {"model_cfg": raw}
    model, pre_train, pre_val, tokenizer = build_from_spec(spec, device)
    if not pretrained:
        logger.warning("model config %s loaded without a checkpoint: its CLIP weights are random "
                       "but for any pretrained tower the config names (pass pretrained=<checkpoint "
                       "path> to load weights)", path)
    else:
        try:
            open_clip.load_checkpoint(model, pretrained, strict=True, device=str(device))
        except (RuntimeError, OSError, KeyError) as exc:
            raise ModelLoadError(f"checkpoint {pretrained} does not fit config {path}: {exc}") from exc
        model.eval()
    return LoadedModel(model, pre_train, pre_val, tokenizer, _spec_of(model, spec["model_cfg"]))

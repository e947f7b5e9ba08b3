"""``load_model``: one entry point for every model source (open_clip name, config JSON, saved
version directory). It sits above :mod:`zscl_core.models` and :mod:`zscl_core.versions`, which
it dispatches to."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ModelLoadError
from .models import LoadedModel, load_config_file, load_named
from .versions import load_version

__all__ = ["load_model"]


def load_model(source: str | Path, *, pretrained: str | None = None,
               device: str | torch.device = "cpu", cache_dir: str | None = None) -> LoadedModel:
    """Load a CLIP model from any supported source.

    Args:
        source: an open_clip model name (``"ViT-B-16"``), a path to a model config JSON, or a
            directory holding a saved version.
        pretrained: with a model name, a pretrained tag (``"openai"``) or a checkpoint path; with a
            config JSON, an optional checkpoint path; ignored for saved versions.
        device: where to put the model.
        cache_dir: where open_clip caches downloads.

    Raises:
        ModelLoadError: the source cannot be found, built or loaded; the message says why.
    """
    path = Path(source)
    if path.is_dir():
        return load_version(path, device=device)
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelLoadError(f"model config {path} does not exist")
        return load_config_file(path, pretrained, device)
    return load_named(str(source), pretrained, device, cache_dir)

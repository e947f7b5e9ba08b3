"""Checks on a model spec before anything is built: a schema with bounds, and a memory estimate.

A spec (``{"model_cfg": ..., "preprocess_cfg": ...}``) comes from a saved version's manifest or a
config file, so it is input to judge, not to trust: open_clip builds whatever it says, and an
image size of 100000 px alone is a 40 GB positional embedding. So, before a model is built:

- every key must be one open_clip knows (the fields of its ``CLIPVisionCfg``, ``CLIPTextCfg`` and
  ``PreprocessCfg``), every value of the right type; each field that sizes a tensor (image size,
  patch size, widths, depths, heads, context length, vocabulary) within bounds;
- a named tower must exist: a timm architecture (``timm.is_model``), a Hugging Face text model
  whose config is found (a ``pkg:`` directory, a local directory, or the Hugging Face cache);
- the whole must fit a memory cap: parameters x 4 bytes (float32) plus the activations of one
  image and one prompt. open_clip's own towers (ViT, modified ResNet, text transformer) and Hugging
  Face text towers are counted from their configs; a timm trunk is instantiated on PyTorch's
  ``meta`` device (shapes only, no memory) and run on one meta image, which also proves the image
  size fits it.

Every problem is a :class:`ModelLoadError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import PreprocessCfg

from .errors import ModelLoadError

__all__ = ["DEFAULT_MAX_MODEL_BYTES", "Estimate", "check_spec", "estimate_bytes",
           "resolve_package_path", "PACKAGE_PREFIX"]

DEFAULT_MAX_MODEL_BYTES = 16 * 10**9  # ViT-bigG-14 in float32 is ~10 GB
PACKAGE_PREFIX = "pkg:"
BYTES_PER_VALUE = 4  # float32: versions load in float32, lower precision comes after

MODEL_KEYS = frozenset({"embed_dim", "vision_cfg", "text_cfg", "custom_text", "quick_gelu",
                        "init_logit_scale", "init_logit_bias", "nonscalar_logit_scale"})
VISION_KEYS = frozenset(f.name for f in dataclasses.fields(CLIPVisionCfg))
TEXT_KEYS = frozenset(f.name for f in dataclasses.fields(CLIPTextCfg))
PREPROCESS_KEYS = frozenset(f.name for f in dataclasses.fields(PreprocessCfg))

# [low, high] of the fields that size tensors; generous: open_clip's largest configs fit
MAX_IMAGE = 4096
BOUNDS = {
    "embed_dim": (1, 16384), "image_size": (1, MAX_IMAGE), "patch_size": (1, 1024),
    "width": (1, 16384), "layers": (1, 256), "head_width": (1, 16384), "heads": (1, 1024),
    "context_length": (1, 4096), "vocab_size": (1, 1_000_000), "attn_pooler_queries": (1, 4096),
    "attn_pooler_heads": (1, 1024), "size": (1, MAX_IMAGE), "fill_color": (0, 255),
}
OTHER_INT = (-1_000_000, 1_000_000)  # any other integer (pad_id, eos_id...)
MAX_FLOAT = 1e6
CHOICES = {
    "timm_proj": {"linear", "mlp", "none", "", None},
    "hf_proj_type": {"linear", "mlp", None},
    "hf_pooler_type": {"mean_pooler", "max_pooler", "cls_pooler", "cls_last_hidden_state_pooler",
                       None},
    "mode": {"RGB"},
    "interpolation": {"bicubic", "bilinear", "random"},
    "resize_mode": {"shortest", "longest", "squash"},
}
STRINGS = frozenset({"timm_model_name", "timm_pool", "hf_model_name", "hf_tokenizer_name",
                     "tokenizer_mode", "pool_type", "proj_type", "pos_embed_type", "block_type"})


@dataclass(frozen=True)
class Estimate:
    """Memory a model needs in float32. ``parameters`` is a count; ``activations`` are bytes
    (one image and one prompt through the towers)."""

    parameters: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters * BYTES_PER_VALUE + self.activations


def resolve_package_path(value: str) -> str:
    """Turn ``"pkg:<module>/<sub/path>"`` into the file path inside that installed package.

    Specs store package-relative paths (for text towers shipped as PyPI packages) so that a saved
    version reloads on any machine where the package is installed.
    """
    if not value.startswith(PACKAGE_PREFIX):
        return value
    module, _, sub = value[len(PACKAGE_PREFIX):].partition("/")
    try:
        base = resources.files(module)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(f"the model needs the Python package '{module}'; install it "
                             f"(pip install {module.replace('_', '-')})") from exc
    return str(base / sub) if sub else str(base)


def check_spec(spec: Any, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> Estimate:
    """Check a spec's schema, bounds and named towers, and its memory estimate against a cap.

    Args:
        spec: ``{"model_cfg": ..., "preprocess_cfg": ...}`` (a manifest's other keys are ignored).
        max_bytes: the most memory the model may need (see :func:`estimate_bytes`).

    Returns:
        The estimate.

    Raises:
        ModelLoadError: naming the first field that is off, or the estimate and the cap.
    """
    if not isinstance(spec, dict):
        raise ModelLoadError(f"a model spec must be an object, got {type(spec).__name__}")
    _check_section(spec.get("preprocess_cfg", {}), "preprocess_cfg", PREPROCESS_KEYS)
    estimate = estimate_bytes(spec.get("model_cfg"))
    if estimate.total > max_bytes:
        raise ModelLoadError(
            f"the model would need about {estimate.total / 1e9:.1f} GB ({estimate.parameters:,} "
            f"parameters in float32 and the activations of one image); the cap is "
            f"{max_bytes / 1e9:.1f} GB: lower its widths, depths or image size, or raise the cap")
    return estimate


def estimate_bytes(model_cfg: Any) -> Estimate:
    """Check ``model_cfg`` (schema, bounds, named towers) and estimate the memory it needs."""
    cfg = _check_model_cfg(model_cfg)
    vision, text, embed = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    if vision.get("timm_model_name"):
        image = _timm_tower(vision, embed)
    elif isinstance(vision.get("layers", 12), list):
        image = _resnet_tower(vision, embed)
    else:
        image = _vit_tower(vision, embed)
    if text.get("hf_model_name"):
        words = _hf_tower(text, embed)
    else:
        words = _text_tower(text, embed)
    return Estimate(image.parameters + words.parameters + 1, image.activations + words.activations)


# ---------------------------------------------------------------------------------------------
# the schema


def _check_model_cfg(model_cfg: Any) -> dict[str, Any]:
    if not isinstance(model_cfg, dict):
        raise ModelLoadError("model_cfg must be an object with embed_dim, vision_cfg and text_cfg "
                             "(see open_clip's model_configs/*.json for examples)")
    if "multimodal_cfg" in model_cfg:
        raise ModelLoadError("model_cfg.multimodal_cfg: CoCa models are not supported; use a CLIP")
    missing = sorted({"embed_dim", "vision_cfg", "text_cfg"} - set(model_cfg))
    if missing:
        raise ModelLoadError(f"model_cfg lacks {missing}; a CLIP config needs embed_dim, "
                             f"vision_cfg and text_cfg (see open_clip's model_configs/*.json)")
    _check_section({k: v for k, v in model_cfg.items() if k not in ("vision_cfg", "text_cfg")},
                   "model_cfg", MODEL_KEYS)
    _check_section(model_cfg["vision_cfg"], "vision_cfg", VISION_KEYS)
    _check_section(model_cfg["text_cfg"], "text_cfg", TEXT_KEYS)
    return model_cfg


def _check_section(section: Any, where: str, known: frozenset[str]) -> None:
    if not isinstance(section, dict):
        raise ModelLoadError(f"{where} must be an object, got {type(section).__name__}")
    unknown = sorted(set(section) - known)
    if unknown:
        raise ModelLoadError(f"{where} has unknown keys {unknown}; known: {sorted(known)}")
    for key, value in section.items():
        _check_value(f"{where}.{key}", key, value)


def _check_value(name: str, key: str, value: Any) -> None:
    if key in CHOICES:
        if not _is_scalar(value) or value not in CHOICES[key]:
            raise ModelLoadError(f"{name} must be one of {sorted(map(str, CHOICES[key]))}, "
                                 f"got {value!r:.80}")
    elif key in STRINGS:
        if not (value is None or isinstance(value, str) and len(value) <= 512):
            raise ModelLoadError(f"{name} must be a string (of at most 512 characters) or null, "
                                 f"got {value!r:.80}")
    elif key.endswith("_kwargs"):
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(k, str) and _is_scalar(v) for k, v in value.items())):
            raise ModelLoadError(f"{name} must be null or an object of plain values")
        for inner, item in (value or {}).items():
            _check_value(f"{name}.{inner}", inner, item)
    elif key in ("image_size", "size", "layers", "mean", "std") and isinstance(value, list):
        _check_list(name, key, value)
    elif key in BOUNDS:
        _check_int(name, value, *BOUNDS[key])
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        _check_int(name, value, *OTHER_INT)
    elif isinstance(value, float):
        if not (math.isfinite(value) and abs(value) <= MAX_FLOAT):
            raise ModelLoadError(f"{name} must be a finite number of at most {MAX_FLOAT:g}, got {value}")
    elif isinstance(value, str):
        if len(value) > 512:
            raise ModelLoadError(f"{name} is {len(value)} characters long; at most 512")
    else:
        raise ModelLoadError(f"{name} must be a number, a string, a boolean or null, got {value!r:.80}")


def _check_list(name: str, key: str, value: list) -> None:
    if key in ("mean", "std"):
        if len(value) != 3 or not all(_is_number(v) and math.isfinite(v) for v in value):
            raise ModelLoadError(f"{name} must be 3 finite numbers (R, G, B), got {value!r:.80}")
        if key == "std" and min(value) <= 0:
            raise ModelLoadError(f"{name} must be positive, got {value}")
        return
    length = 4 if key == "layers" else 2
    if len(value) != length:
        raise ModelLoadError(f"{name} must be an integer or a list of {length}, got {value!r:.80}")
    for item in value:
        _check_int(name, item, *BOUNDS[key])


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelLoadError(f"{name} must be an integer, got {value!r:.80}")
    if not low <= value <= high:
        raise ModelLoadError(f"{name} must be in [{low}, {high}], got {value}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _heads(where: str, width: int, head_width: int) -> int:
    heads = max(1, width // head_width)
    if width % heads:
        raise ModelLoadError(f"{where}.width ({width}) must be a multiple of its number of heads "
                             f"({where}.width // {where}.head_width = {heads})")
    return heads


# ---------------------------------------------------------------------------------------------
# the towers: parameters and the activations of one input (bytes)


def _blocks(width: int, layers: int, mlp_ratio: float) -> int:
    """Parameters of open_clip's residual attention blocks: attention (4 w^2 + 4 w), MLP
    (2 m w^2 + m w + w), two layer norms (4 w)."""
    return layers * int((4 + 2 * mlp_ratio) * width * width + (9 + mlp_ratio) * width)


def _block_activations(tokens: int, width: int, heads: int, mlp_ratio: float) -> int:
    """One block's live values for one input: residual, norm, q/k/v, output, MLP in and out,
    and the attention scores with their softmax."""
    return BYTES_PER_VALUE * int(tokens * width * (6 + 2 * mlp_ratio) + 2 * heads * tokens * tokens)


def _vit_tower(cfg: dict[str, Any], embed: int) -> Estimate:
    height, width_px = _pair(cfg.get("image_size", 224))
    patch = cfg.get("patch_size", 16)
    if patch > min(height, width_px):
        raise ModelLoadError(f"vision_cfg.patch_size ({patch}) must be at most the image size "
                             f"({height}x{width_px})")
    width, layers = cfg.get("width", 768), cfg.get("layers", 12)
    mlp = float(cfg.get("mlp_ratio", 4.0))
    heads = _heads("vision_cfg", width, cfg.get("head_width", 64))
    tokens = (height // patch) * (width_px // patch) + 1
    params = (3 * patch * patch * width + width + tokens * width + 4 * width
              + _blocks(width, layers, mlp) + width * embed)
    image = BYTES_PER_VALUE * 3 * height * width_px
    return Estimate(params, image + _block_activations(tokens, width, heads, mlp))


def _resnet_tower(cfg: dict[str, Any], embed: int) -> Estimate:
    height, width_px = _pair(cfg.get("image_size", 224))
    if height != width_px or height % 32:
        raise ModelLoadError(f"vision_cfg.image_size must be square and a multiple of 32 for a "
                             f"ResNet tower (vision_cfg.layers is a list), got {cfg.get('image_size')}")
    width = cfg.get("width", 64)
    head_width = cfg.get("head_width", 64)
    heads = max(1, width * 32 // head_width)
    if (width * 32) % heads:
        raise ModelLoadError(f"vision_cfg.width * 32 ({width * 32}) must be a multiple of its heads "
                             f"({heads}); change vision_cfg.head_width")
    half = width // 2
    params, inplanes = 27 * half + 9 * half * half + 9 * half * width, width  # the 3-conv stem
    for stage, blocks in enumerate(cfg["layers"]):
        planes = width * 2 ** stage
        # bottlenecks 1x1 -> 3x3 -> 1x1 (x4); each stage's first block also has a 1x1 shortcut
        params += (inplanes * planes + 13 * planes * planes + inplanes * 4 * planes
                   + (blocks - 1) * 17 * planes * planes)
        inplanes = 4 * planes
    grid = (height // 32) ** 2 + 1  # the attention pool: positions, q/k/v, output projection
    params += grid * inplanes + 3 * (inplanes * inplanes + inplanes) + inplanes * embed + embed
    activations = BYTES_PER_VALUE * (3 + 3 * width // 2) * height * width_px  # the stem at 1/2 scale
    return Estimate(params, activations)


def _text_tower(cfg: dict[str, Any], embed: int) -> Estimate:
    width, layers = cfg.get("width", 512), cfg.get("layers", 12)
    heads, context = cfg.get("heads", 8), cfg.get("context_length", 77)
    vocab, mlp = cfg.get("vocab_size", 49408), float(cfg.get("mlp_ratio", 4.0))
    if width % heads:
        raise ModelLoadError(f"text_cfg.width ({width}) must be a multiple of text_cfg.heads ({heads})")
    params = (vocab + context) * width + _blocks(width, layers, mlp) + 2 * width + width * embed
    return Estimate(params, _block_activations(context, width, heads, mlp))


def _hf_tower(cfg: dict[str, Any], embed: int) -> Estimate:
    name = cfg["hf_model_name"]
    config = _hf_config(name)
    where = f"the Hugging Face config of text_cfg.hf_model_name {name!r}"
    sizes = {}
    for key, bound in (("hidden_size", BOUNDS["width"]), ("num_hidden_layers", BOUNDS["layers"]),
                       ("num_attention_heads", BOUNDS["heads"]), ("vocab_size", BOUNDS["vocab_size"]),
                       ("max_position_embeddings", (1, 1 << 17))):
        value = getattr(config, key, None)
        _check_int(f"{where}: {key}", value, *bound)
        sizes[key] = value
    hidden = sizes["hidden_size"]
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    _check_int(f"{where}: intermediate_size", inner, 1, 4 * BOUNDS["width"][1])
    mlp = inner / hidden
    params = ((sizes["vocab_size"] + sizes["max_position_embeddings"] + 2) * hidden
              + _blocks(hidden, sizes["num_hidden_layers"], mlp) + hidden * hidden + 3 * hidden)
    proj = cfg.get("hf_proj_type", "mlp")
    if proj == "mlp":
        middle = (hidden + embed) // 2
        params += hidden * middle + middle + middle * embed + embed
    elif proj == "linear" or hidden != embed:
        params += hidden * embed
    context = cfg.get("context_length", 77)
    return Estimate(params, _block_activations(context, hidden, sizes["num_attention_heads"], mlp))


def _hf_config(name: str):
    from transformers import AutoConfig  # lazy: only Hugging Face text towers need it

    path = resolve_package_path(name)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"text_cfg.hf_model_name {name!r} names no Hugging Face model found "
                             f"here ({exc}); install the package holding it, or fix the name") from exc


def _timm_tower(cfg: dict[str, Any], embed: int) -> Estimate:
    import timm  # lazy: only timm towers need it

    name = cfg["timm_model_name"]
    if not isinstance(name, str) or not timm.is_model(name):
        raise ModelLoadError(f"vision_cfg.timm_model_name {name!r} is not a timm model; choose one "
                             f"of timm.list_models()")
    height, width_px = _pair(cfg.get("image_size", 224))
    try:
        with torch.device("meta"):
            trunk = timm.create_model(name, pretrained=False, num_classes=0)
        largest = _largest_output(trunk, (1, 3, height, width_px))
    except Exception as exc:  # noqa: BLE001 - any failure: this trunk cannot take this input
        raise ModelLoadError(f"timm model {name!r} cannot take {height}x{width_px} images "
                             f"(vision_cfg.image_size): {type(exc).__name__}: {exc}") from exc
    features = trunk.num_features
    params = sum(p.numel() for p in trunk.parameters())
    proj = cfg.get("timm_proj", "linear")
    if proj == "linear":
        params += features * embed + embed
    elif proj == "mlp":
        params += features * 2 * embed + 2 * embed + 2 * embed * embed + embed
    elif proj in ("", None) and cfg.get("timm_pool", "avg") not in ("abs_attn", "rot_attn"):
        params += features * embed + embed  # the trunk's own classifier, sized embed_dim
    activations = BYTES_PER_VALUE * (3 * height * width_px + 3 * largest)
    return Estimate(params, activations)


def _largest_output(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """The most values any leaf module outputs for one meta input of ``shape``."""
    largest = [0]

    def record(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    hooks = [m.register_forward_hook(record) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module.eval()(torch.empty(shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return largest[0]

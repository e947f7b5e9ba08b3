"""Zero-shot classification heads: class names x prompt templates -> classifier weights.

Each class's weight is the normalised mean of its normalised prompt embeddings (Radford et al.,
2021, Sec. 3.1.4). Prompts are encoded in chunks so that a 1,000-class head never holds every
prompt's activations at once.
"""

from __future__ import annotations

import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from open_clip import build_zero_shot_classifier
from torch import nn

from .errors import ConfigError, WorkAbandoned

__all__ = ["DEFAULT_TEMPLATES", "build_head", "check_template", "encode_texts", "HeadCache", "HeadKey"]

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
)

HeadKey = tuple[str, tuple[str, ...], tuple[str, ...]]

_TEMPLATE_HELP = ("a template needs exactly one '{}' where the class name goes and no other "
                  "'{...}' field; write a literal brace as '{{' or '}}', e.g. 'a photo of a {}.'")


def check_template(template: str) -> str:
    """``template`` itself if ``template.format(name)`` puts the class name in exactly once.

    Anything else would fail or mislead when the head is built: ``"{x}"`` or ``"{0}{}"`` raise in
    ``str.format``, ``"{.__class__}"`` reads an attribute of the name, and ``"{{}}"`` makes
    prompts without the class name.

    Raises:
        ConfigError: naming the template and what is wrong with it.
    """
    if not isinstance(template, str):
        raise ConfigError(f"template {template!r} is not a string; {_TEMPLATE_HELP}")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # an unmatched '{' or '}'
        raise ConfigError(f"template {template!r} is not a valid format string ({exc}); "
                          f"{_TEMPLATE_HELP}") from exc
    if not fields:
        raise ConfigError(f"template {template!r} has no '{{}}' for the class name; "
                          f"{_TEMPLATE_HELP}")
    if fields != [("", "", None)]:
        shown = ", ".join("{" + name + (f"!{conversion}" if conversion else "")
                          + (f":{spec}" if spec else "") + "}" for name, spec, conversion in fields)
        raise ConfigError(f"template {template!r} has the format field(s) {shown}; "
                          f"{_TEMPLATE_HELP}")
    return template


def build_head(model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
               templates: Sequence[str] = DEFAULT_TEMPLATES, *,
               device: str | torch.device = "cpu", chunk_texts: int = 512,
               should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Template-averaged, normalised classifier weights.

    Args:
        model: a CLIP model with ``encode_text``.
        tokenizer: its tokenizer.
        classnames: the labels, in output order.
        templates: format strings with one ``{}`` for the class name (see :func:`check_template`).
        device: where to encode.
        chunk_texts: the most prompts encoded in one forward pass.
        should_stop: checked before each chunk; True abandons the work with
            :class:`~zscl_core.errors.WorkAbandoned` (a server whose client went away).

    Returns:
        A (embed_dim, num_classes) tensor; logits are ``normalised_image_features @ head``.
    """
    if not classnames:
        raise ValueError("a head needs at least one class name")
    if not templates:
        raise ConfigError("a head needs at least one template, e.g. 'a photo of a {}.'")
    templates = [check_template(t) for t in templates]
    per_batch = max(1, chunk_texts // len(templates))
    classnames, parts = list(classnames), []
    for start in range(0, len(classnames), per_batch):  # each class's weight is its own mean
        if should_stop is not None and should_stop():
            raise WorkAbandoned(f"head building stopped after {start} of {len(classnames)} "
                                f"classes")
        parts.append(build_zero_shot_classifier(model, tokenizer, classnames[start:start + per_batch],
                                                list(templates), num_classes_per_batch=per_batch,
                                                device=device, use_tqdm=False))
    return torch.cat(parts, dim=1)


class HeadCache:
    """A thread-safe LRU cache of heads keyed by (model version, class names, templates).

    Counts hits and misses so that callers can export them as metrics.
    """

    def __init__(self, max_entries: int = 128):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[HeadKey, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(version: str, classnames: Sequence[str], templates: Sequence[str]) -> HeadKey:
        return (version, tuple(classnames), tuple(templates))

    def get_or_build(self, key: HeadKey, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached head for ``key``, building it with ``build()`` on a miss."""
        with self._lock:
            head = self._entries.get(key)
            if head is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return head
            self.misses += 1
        head = build()  # outside the lock: encoding may take a while
        with self._lock:
            self._entries[key] = head
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return head

    def __len__(self) -> int:
        return len(self._entries)


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Callable, texts: Sequence[str], *,
                 device: str | torch.device = "cpu", chunk_texts: int = 512) -> torch.Tensor:
    """Normalised text embeddings of ``texts``, (len(texts), embed_dim), encoded in chunks."""
    if not texts:
        raise ValueError("encode_texts needs at least one text")
    parts = []
    for start in range(0, len(texts), chunk_texts):
        tokens = tokenizer(list(texts[start:start + chunk_texts])).to(device)
        parts.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(parts)

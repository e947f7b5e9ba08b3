"""Zero-shot classification heads: class names x prompt templates -> classifier weights.

Each class's weight is the normalised mean of its normalised prompt embeddings (Radford et al.,
2021, Sec. 3.1.4). Prompts are encoded in chunks so that a 1,000-class head never holds every
prompt's activations at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from open_clip import build_zero_shot_classifier
from torch import nn

__all__ = ["DEFAULT_TEMPLATES", "build_head", "encode_texts", "HeadCache", "HeadKey"]

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


def build_head(model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
               templates: Sequence[str] = DEFAULT_TEMPLATES, *,
               device: str | torch.device = "cpu", chunk_texts: int = 512) -> torch.Tensor:
    """Template-averaged, normalised classifier weights.

    Args:
        model: a CLIP model with ``encode_text``.
        tokenizer: its tokenizer.
        classnames: the labels, in output order.
        templates: format strings with one ``{}`` for the class name.
        device: where to encode.
        chunk_texts: the most prompts encoded in one forward pass.

    Returns:
        A (embed_dim, num_classes) tensor; logits are ``normalised_image_features @ head``.
    """
    if not classnames:
        raise ValueError("a head needs at least one class name")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template needs a '{}' where the class name goes, e.g. 'a photo of a {}.'")
    per_batch = max(1, chunk_texts // len(templates))
    return build_zero_shot_classifier(model, tokenizer, list(classnames), list(templates),
                                      num_classes_per_batch=per_batch, device=device)


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

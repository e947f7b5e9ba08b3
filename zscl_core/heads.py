"""Zero-shot classification heads: class names x prompt templates -> classifier weights.

Each class's weight is the normalised mean of its normalised prompt embeddings (Radford et al.,
2021, Sec. 3.1.4). Prompts are encoded in chunks so that a 1,000-class head never holds every
prompt's activations at once.

Tokenizers pad every prompt to the context length (77 tokens for CLIP, 64 for the starter) while a
prompt is ~10 tokens, so :func:`encode_texts` sorts prompts by length and cuts each chunk's
padding beyond its longest prompt (about 3.6x faster on the starter) wherever that provably leaves
the features unchanged: a causal CLIP text tower never lets a token see later positions, and a
Hugging Face tower masks its padding out of attention and mean/CLS pooling.
"""

from __future__ import annotations

import logging
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.hf_model import (ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler)
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import text_global_pool
from torch import nn

from .errors import ConfigError, WorkAbandoned

__all__ = ["DEFAULT_TEMPLATES", "build_head", "check_template", "encode_texts", "HeadCache", "HeadKey"]

logger = logging.getLogger(__name__)

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
        chunk_texts: the most prompts encoded in one forward pass (all the head's prompts are
            encoded together by :func:`encode_texts`, sorted by length).
        should_stop: checked before each chunk; True abandons the work with
            :class:`~zscl_core.errors.WorkAbandoned` (a server whose client went away).

    Returns:
        A float32 (embed_dim, num_classes) tensor; logits are ``normalised_image_features @ head``.
    """
    if not classnames:
        raise ValueError("a head needs at least one class name")
    if not templates:
        raise ConfigError("a head needs at least one template, e.g. 'a photo of a {}.'")
    templates = [check_template(t) for t in templates]
    prompts = [template.format(name) for name in classnames for template in templates]
    embeddings = encode_texts(model, tokenizer, prompts, device=device, chunk_texts=chunk_texts,
                              should_stop=should_stop)
    per_class = embeddings.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1).T.contiguous()


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

    def warm(self, key: HeadKey, build: Callable[[], torch.Tensor]) -> bool:
        """Build and cache the head for ``key`` unless it is cached; True when it was built.

        For work done ahead of requests (a new label set, a new version): the hit and miss
        counts, which describe requests, stay as they are; a built head counts as just used.
        """
        with self._lock:
            if key in self._entries:
                return False
        head = build()
        with self._lock:
            if key not in self._entries:
                self._entries[key] = head
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return True

    def recent(self, version: str, n: int) -> list[HeadKey]:
        """Up to ``n`` cached keys of ``version``, the most recently used first."""
        with self._lock:
            return [key for key in reversed(self._entries) if key[0] == version][:n]

    def __contains__(self, key: HeadKey) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class _TextTower:
    """How to encode token rows of one model, and how many leading positions each row needs.

    ``needed(tokens)`` gives, per row, the shortest length it can be cut to with its feature
    unchanged; ``encode(tokens)`` gives the normalised features of rows cut to at least that.
    """

    needed: Callable[[torch.Tensor], torch.Tensor]
    encode: Callable[[torch.Tensor], torch.Tensor]


def _overrides_encode_text(model: nn.Module, cls: type) -> bool:
    """Whether ``model.encode_text`` is anything but ``cls``'s (a subclass's or a patched one's,
    such as zscl_bench's memo): then what it computes is unknown and nothing is trimmed."""
    return "encode_text" in vars(model) or type(model).encode_text is not cls.encode_text


def _clip_tower(model: CLIP) -> _TextTower | None:
    """open_clip's CLIP: under its causal mask a token sees only itself and earlier ones, so the
    pooled token's feature ignores everything after it. ``CLIP.encode_text`` adds the whole
    positional table and applies the whole context-length mask, so the trimmed pass slices both."""
    if model.attn_mask is None:  # bidirectional: the pooled token would see the padding
        return None
    pool, eos = model.text_pool_type, getattr(model, "text_eos_id", None)
    if pool == "argmax":  # the end-of-text token has the highest id
        def needed(tokens): return tokens.argmax(dim=-1) + 1
    elif pool == "eos" and eos is not None:
        def needed(tokens): return (tokens == eos).int().argmax(dim=-1) + 1
    elif pool == "first":
        def needed(tokens): return torch.ones(len(tokens), dtype=torch.long)
    else:  # "last" pools a padding position
        return None

    def encode(tokens: torch.Tensor) -> torch.Tensor:  # CLIP.encode_text, sliced to the length
        length = tokens.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype)
        x = x + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = text_global_pool(model.ln_final(x), tokens, pool, eos_token_id=eos)
        if isinstance(model.text_projection, nn.Linear):
            x = model.text_projection(x)
        elif model.text_projection is not None:
            x = x @ model.text_projection
        return F.normalize(x, dim=-1)

    return _TextTower(needed, encode)


def _hf_tower(model: CustomTextCLIP) -> _TextTower | None:
    """A Hugging Face tower (the starter's MiniLM): its attention mask is ``tokens != pad``, so
    padding gets zero attention weight, and mean pooling weighs it by zero, CLS pooling reads
    position 0; trailing padding therefore changes nothing. Other poolers (max pooling) are not
    trimmed."""
    text = model.text
    safe_pooler = type(text.pooler) in (MeanPooler, ClsPooler, ClsLastHiddenStatePooler)
    pad = text.config.pad_token_id
    if not safe_pooler or text.output_tokens or pad is None:
        return None

    def needed(tokens: torch.Tensor) -> torch.Tensor:  # one past the last real token
        positions = torch.arange(1, tokens.shape[1] + 1)
        return ((tokens != pad).long() * positions).amax(dim=-1).clamp(min=1)

    return _TextTower(needed, lambda tokens: F.normalize(text(tokens), dim=-1))


def _padded_tower(model: nn.Module) -> _TextTower:
    """Any model, as it is: every row needs all its positions."""
    logger.debug("%s: trimming its prompts' padding is not known to be exact; encoding them "
                 "padded", type(model).__name__)
    return _TextTower(lambda tokens: torch.full((len(tokens),), tokens.shape[1]),
                      lambda tokens: model.encode_text(tokens, normalize=True))


def _text_tower(model: nn.Module) -> _TextTower | None:
    """The trimmable description of ``model``'s text tower; None where trimming is not known to
    be exact (unknown model class, a patched ``encode_text``): those prompts are encoded padded."""
    if isinstance(model, CLIP) and not _overrides_encode_text(model, CLIP):
        return _clip_tower(model)
    if (isinstance(model, CustomTextCLIP) and not _overrides_encode_text(model, CustomTextCLIP)
            and type(model.text) is HFTextEncoder):
        return _hf_tower(model)
    return None


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Callable, texts: Sequence[str], *,
                 device: str | torch.device = "cpu", chunk_texts: int = 512,
                 should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Normalised text embeddings of ``texts``, in their order, encoded in chunks.

    Every text encoding in the project goes through here. The texts are sorted by token length,
    longest first, so that each chunk holds prompts of similar length, and each chunk is cut to
    its longest prompt, for the towers where that is exact (open_clip's causal CLIP text tower,
    Hugging Face towers with mean or CLS pooling); other models get the padded tokens.

    Args:
        model: a CLIP model with ``encode_text``.
        tokenizer: its tokenizer (padding to the context length).
        texts: the texts.
        device: where to encode.
        chunk_texts: the most texts encoded in one forward pass.
        should_stop: checked before each chunk; True abandons the work with
            :class:`~zscl_core.errors.WorkAbandoned`.

    Returns:
        A float32 (len(texts), embed_dim) tensor on ``device``.
    """
    if not texts:
        raise ValueError("encode_texts needs at least one text")
    tokens = tokenizer(list(texts))
    tower = _text_tower(model) or _padded_tower(model)
    needed = tower.needed(tokens).clamp(max=tokens.shape[1])
    order = torch.argsort(needed, descending=True, stable=True)
    out = None
    for start in range(0, len(texts), chunk_texts):
        if should_stop is not None and should_stop():
            raise WorkAbandoned(f"text encoding stopped after {start} of {len(texts)} prompts")
        rows = order[start:start + chunk_texts]
        length = int(needed[rows].max())
        features = tower.encode(tokens[rows, :length].to(device)).float()
        if out is None:
            out = features.new_empty(len(texts), features.shape[1])
        out[rows.to(out.device)] = features  # back in the order of ``texts``
    return out

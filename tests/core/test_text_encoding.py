"""Prompts encoded sorted by length with each chunk's padding cut give the padded features, in the
order the texts came in."""

import contextlib
import types

import torch
from open_clip import build_zero_shot_classifier

from zscl_core import build_head, encode_texts

# deliberately unsorted: short, long, medium, ...; the longest is cut at the tiny context (16)
PROMPTS = ["cat", "a very blurry low resolution photo of a small striped cat on a mat.", "a dog.",
           ("an origami sculpture of a large red fire truck parked beside a tall old lighthouse at "
            "dusk, seen from far away across a bay"), "red", "a photo of the sky.",
           "a close-up photo of a green apple.", "x"]
NAMES = ["cat", "fire truck", "lighthouse at dusk", "the Eiffel tower seen from a boat on the Seine"]
TEMPLATES = ["{}", "a photo of a {}.", "a blurry low resolution close-up photo of a small {} in the rain."]


@contextlib.contextmanager
def _record_lengths(module: torch.nn.Module, key: str | None = None):
    """Yields the list of the sequence length of every forward pass through ``module``."""
    lengths = []

    def hook(_module, args, kwargs):
        lengths.append((kwargs[key] if key else args[0]).shape[1])

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield lengths
    finally:
        handle.remove()


def test_a_causal_clip_tower_encodes_trimmed_chunks_to_the_padded_features_in_order(tiny):
    model, tokenizer = tiny.model.eval(), tiny.tokenizer
    padded = model.encode_text(tokenizer(PROMPTS), normalize=True)
    with _record_lengths(model.token_embedding) as lengths:
        trimmed = encode_texts(model, tokenizer, PROMPTS, chunk_texts=3)
    assert torch.allclose(trimmed, padded, atol=1e-5)
    # the rows really were cut and sorted: only the first chunk holds the full-context prompt
    assert lengths[0] == 16 and lengths == sorted(lengths, reverse=True) and lengths[-1] < 8
    # and the order was restored: the features differ from prompt to prompt
    assert not torch.allclose(trimmed[0], trimmed[1], atol=1e-3)

    reference = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES, use_tqdm=False)
    assert torch.allclose(build_head(model, tokenizer, NAMES, TEMPLATES, chunk_texts=4),
                          reference, atol=1e-5)


def test_a_patched_encode_text_is_used_as_it_is_on_padded_prompts(tiny):
    model, tokenizer = tiny.model.eval(), tiny.tokenizer
    seen = []

    def patched(self, text, normalize=False):  # zscl_bench's memo patches encode_text this way
        seen.append(text.shape[1])
        return type(self).encode_text(self, text, normalize=normalize)

    model.encode_text = types.MethodType(patched, model)
    features = encode_texts(model, tokenizer, PROMPTS, chunk_texts=3)
    assert seen == [16, 16, 16]
    assert torch.allclose(features, model.encode_text(tokenizer(PROMPTS), normalize=True), atol=1e-6)


def test_the_starters_hugging_face_tower_encodes_trimmed_chunks_to_the_padded_features(starter):
    model, tokenizer = starter.model.eval(), starter.tokenizer
    padded = model.encode_text(tokenizer(PROMPTS), normalize=True)
    with _record_lengths(model.text.transformer, key="input_ids") as lengths:
        trimmed = encode_texts(model, tokenizer, PROMPTS, chunk_texts=3)
    assert torch.allclose(trimmed, padded, atol=1e-5)
    assert lengths == sorted(lengths, reverse=True) and lengths[0] < 64 and lengths[-1] < 10
    assert not torch.allclose(trimmed[0], trimmed[1], atol=1e-3)

    reference = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES, use_tqdm=False)
    assert torch.allclose(build_head(model, tokenizer, NAMES, TEMPLATES, chunk_texts=4),
                          reference, atol=1e-5)

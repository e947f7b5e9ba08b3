"""The frozen-trunk cut and the frozen-text memo change no output of the model."""

import copy

import pytest
import torch

from zscl_bench.features import cut_model, memoize_frozen_text, tower_depth
from zscl_core import trainable_parameters


def test_cut_model_reproduces_the_full_image_tower(tiny):
    model = tiny.model.eval()
    images = torch.randn(3, 3, 32, 32)
    assert tower_depth(model) == 2
    cut, trunk = cut_model(model, 1)
    with torch.no_grad():
        full = model.encode_image(images)
        features = trunk(images)
        assert features.shape == (3, 17, 64)  # 16 patches + class token, width 64
        assert torch.allclose(cut.encode_image(features), full, atol=1e-6)
    # the cut model holds one of the two residual blocks; the original keeps both
    assert len(cut.visual.transformer.resblocks) == 1
    assert len(model.visual.transformer.resblocks) == 2
    with pytest.raises(ValueError, match="train_blocks"):
        cut_model(model, 2)


def test_text_memo_returns_the_same_features_and_steps_aside_when_text_trains(tiny):
    model = memoize_frozen_text(copy.deepcopy(tiny.model))
    tokens = tiny.tokenizer(["a photo of a red square.", "stripes"])
    with torch.no_grad():
        expected = tiny.model.encode_text(tokens, normalize=True)
    student = copy.deepcopy(model)
    trainable_parameters(student, "image")  # text frozen: the memo answers
    student.train()
    first = student.encode_text(tokens, normalize=True)
    assert torch.allclose(first, expected, atol=1e-5) and len(student._text_memo) == 1
    assert student.encode_text(tokens, normalize=True) is first
    trainable_parameters(student, "all")  # text trains: computed afresh, with gradients
    assert student.encode_text(tokens, normalize=True).requires_grad
    assert len(model._text_memo) == 0  # the copy's memo is its own

import copy

import pytest
import torch

from tests.helpers.synthetic import reference_images
from zscl_core import UnlabelledImages, drift

TEXTS = ["a photo of red.", "a photo of green.", "a photo of blue.", "a photo of a cat."]


def test_drift_is_zero_for_the_same_model_and_grows_with_a_change(pretrained_tiny):
    loaded, _ = pretrained_tiny
    images = UnlabelledImages(reference_images(40, seed=3), loaded.preprocess_val)
    same = drift(loaded.model, loaded.model, loaded.tokenizer, images, TEXTS, batch_size=16)
    assert same == pytest.approx(0.0, abs=1e-5)
    moved = copy.deepcopy(loaded.model)
    with torch.no_grad():
        moved.visual.proj.add_(0.05 * torch.randn_like(moved.visual.proj))
    small = drift(moved, loaded.model, loaded.tokenizer, images, TEXTS, batch_size=16)
    with torch.no_grad():
        moved.visual.proj.add_(0.5 * torch.randn_like(moved.visual.proj))
    large = drift(moved, loaded.model, loaded.tokenizer, images, TEXTS, batch_size=16)
    assert 0 < small < large

import pytest
import torch

from zscl_core import WorkAbandoned, build_head


def test_a_head_built_in_chunks_equals_one_built_at_once_and_can_be_abandoned(tiny):
    names = [f"class {i}" for i in range(10)]
    templates = ["a photo of a {}.", "a {}."]
    whole = build_head(tiny.model, tiny.tokenizer, names, templates, chunk_texts=512)
    chunked = build_head(tiny.model, tiny.tokenizer, names, templates, chunk_texts=6)  # 3 a chunk
    assert whole.shape == (32, 10)
    assert torch.allclose(whole, chunked, atol=1e-6)
    checks = []

    def stop_after_two_chunks() -> bool:
        checks.append(1)
        return len(checks) > 2

    with pytest.raises(WorkAbandoned, match="after 12 of 20 prompts"):
        build_head(tiny.model, tiny.tokenizer, names, templates, chunk_texts=6,
                   should_stop=stop_after_two_chunks)

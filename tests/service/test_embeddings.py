"""service.embeddings on its own: the float16 wire format and the over-long text check."""

import base64

import open_clip
import torch

from service.embeddings import as_base64_float16, over_long_texts
from zscl_core import specs, starter


def test_base64_float16_is_little_endian_half_precision_bytes():
    # 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800 in IEEE half precision, low byte first
    encoded = as_base64_float16(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]))
    assert [base64.b64decode(s) for s in encoded] == [b"\x00\x3c\x00\xc0\x00\x38", bytes(6)]


def _words(n: int) -> str:
    return " ".join(["cat"] * n)  # one token per word in both tokenizers


def test_over_long_texts_are_those_the_tokenizer_would_cut():
    clip = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    # start + 14 words + end = 16 tokens fit; 15 words need 17
    assert over_long_texts(clip, ["a cat", _words(14), _words(15), _words(40)]) == [2, 3]
    # the starter's Hugging Face tokenizer: [CLS] + 62 words + [SEP] = its 64
    minilm = open_clip.tokenizer.HFTokenizer(specs.resolve_package_path(starter.TEXT_PACKAGE_DIR),
                                             context_length=starter.CONTEXT_LENGTH)
    assert over_long_texts(minilm, [_words(62), "a cat", _words(63)]) == [2]


def test_a_tokenizer_that_cannot_be_asked_reports_nothing():
    def plain(texts):  # no context_length: whatever it does with long texts stands
        return torch.zeros(len(texts), 4, dtype=torch.long)

    assert over_long_texts(plain, [_words(100)]) == []

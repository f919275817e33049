"""Caption tokens equal open_clip's tokenizer (offline BPE vocabulary), truncation counted."""

from __future__ import annotations

import open_clip
import pytest
import torch

from avlops.preprocessing.text import tokenize

CAPTIONS = ["A dog barks at a red ball.", "  someone   SPEAKS while music plays ", "ünïcödé café — 東京"]


@pytest.mark.parametrize("context_length", [77, 32])
def test_tokens_match_open_clip(context_length: int) -> None:
    ref = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS, context_length=context_length)
    out = tokenize(CAPTIONS, context_length)
    assert out.tokens.dtype == torch.long and out.tokens.shape == (3, context_length)
    assert torch.equal(out.tokens, ref)
    assert out.truncated == 0


def test_long_captions_are_cut_like_open_clip() -> None:
    long = " ".join(["word"] * 40)
    ref = open_clip.get_tokenizer("ViT-B-32")([long, "short"], context_length=16)
    out = tokenize([long, "short"], 16)
    assert torch.equal(out.tokens, ref)
    assert out.truncated == 1
    assert out.tokens[0, -1].item() == out.tokens[1, 2].item()  # ends with <end_of_text>


def test_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError):
        tokenize("one caption", 77)  # type: ignore[arg-type]

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


def test_ids_and_decoding_match_open_clip_on_many_captions() -> None:
    """The torch-free tokenizer against open_clip's on the synthetic corpus's captions and awkward text."""
    from avlops.data.params import SynthConfig
    from avlops.data.synth import captions_for, sample_specs
    from avlops.preprocessing.text import get_tokenizer, token_ids

    captions = [c for s in sample_specs(SynthConfig(clips=60, seed=3)) for c in captions_for(s)]
    captions += ["&amp;quot;x&amp;quot;", "don't STOP-ME now!!", "a\u00a0b\tc", "1234567", "naïve résumé", "🙂 ok"]
    ref = open_clip.get_tokenizer("ViT-B-32")(captions, context_length=77)
    ids, _ = token_ids(captions, 77)
    assert torch.equal(torch.from_numpy(ids), ref)
    mine, theirs = get_tokenizer(), open_clip.tokenizer.SimpleTokenizer()
    for row in ref.tolist()[:20]:
        body = [i for i in row[1:] if i not in (0, theirs.eot_token_id)]
        assert mine.decode(body) == theirs.decode(body)


def test_text_tokens_import_no_torch() -> None:
    """Served text preprocessing runs in a process without torch (bench/results/startup.md: ~0.5 GB each)."""
    import subprocess
    import sys

    code = (
        "import sys; from avlops.preprocessing.text import token_ids; token_ids(['a red ball'], 8); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

"""Caption metrics against pycocoevalcap run directly (COCOEvalCap's steps), decoding, and a missing Java runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from avlops.evaluation.captioning import (
    JavaNotFoundError,
    caption_scores,
    decode_tokens,
    detokenize,
    require_java,
    score_caption_sets,
)
from avlops.preprocessing.text import tokenize

REFERENCES = {
    "clip-a": ["A red circle moves left while a high tone plays.", "a red circle slides to the left, high beep"],
    "clip-b": ["a blue square moves up as someone says 'seven'", "A voice says seven; a blue square rises."],
    "clip-c": ["a green triangle moves down over rapid clicking", "clicks while a green triangle sinks"],
}
CANDIDATES = {
    "clip-a": "a red circle moves left while a tone plays",
    "clip-b": "a blue square moves up and a voice says seven",
    "clip-c": "a green circle moves right",
}

pytestmark = pytest.mark.slow  # starts Java (PTB tokenizer, METEOR)


@pytest.fixture(scope="module")
def meteor() -> Iterator[Meteor]:
    """One METEOR process for the direct runs (it takes seconds to load its paraphrase tables)."""
    m = Meteor()
    yield m
    del m


def coco_eval_cap(refs: dict[str, list[str]], cands: dict[str, str], meteor: Meteor) -> dict[str, float]:
    """``COCOEvalCap.evaluate`` without SPICE: tokenise references and results separately, then each scorer."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in cands.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    out = {
        "BLEU-4": bleu[3],
        "METEOR": meteor.compute_score(gts, res)[0],
        "ROUGE-L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }
    return {k: 100 * v for k, v in out.items()}


def test_scores_equal_pycocoevalcap_run_directly(meteor: Meteor) -> None:
    """Several candidate sets share one tokenizer run and one METEOR process, and score as separate direct runs."""
    perfect = {k: v[0] for k, v in REFERENCES.items()}
    one = {"clip-a": CANDIDATES["clip-a"]}
    got = score_caption_sets(REFERENCES, {"av": CANDIDATES, "v": one, "p": perfect})
    assert list(got["av"]) == ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert got["av"] == pytest.approx(coco_eval_cap(REFERENCES, CANDIDATES, meteor), abs=1e-9)
    assert got["v"] == pytest.approx(coco_eval_cap({"clip-a": REFERENCES["clip-a"]}, one, meteor), abs=1e-9)
    assert got["p"] == pytest.approx(coco_eval_cap(REFERENCES, perfect, meteor), abs=1e-9)
    assert got["p"]["BLEU-4"] > got["av"]["BLEU-4"] > 0 and got["p"]["CIDEr"] > got["av"]["CIDEr"] > 0


def test_missing_references_are_named() -> None:
    with pytest.raises(ValueError, match="no references for 1 clip"):
        caption_scores(REFERENCES, {"clip-z": "a caption"})


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without any java on it
    with pytest.raises(JavaNotFoundError, match=r"need a Java runtime, but `java` is not on PATH.*default-jre"):
        require_java()
    with pytest.raises(JavaNotFoundError, match="Java runtime"):
        caption_scores(REFERENCES, CANDIDATES)
    broken = tmp_path / "java"
    broken.write_text("#!/bin/sh\necho 'no JVM here' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(JavaNotFoundError, match="-version` exited 1: no JVM here"):
        require_java()


def test_java_banner() -> None:
    assert "version" in require_java()


@pytest.mark.parametrize(
    "caption",
    [
        'a voice says "four" as the green square falls',
        'you hear the spoken word "four" and see a green square shape that moves down',
        "a magenta diamond rises, accompanied by a low-pitched tone",
        "it's a red circle (small) that doesn't stop: 3.5 s, then 2,000 clicks!",
        'someone says "one" and "two"',
        '"quoted" first',
    ],
)
def test_decoded_captions_read_as_sentences(caption: str) -> None:
    """CLIP's BPE splits punctuation off words; the demo printed 'a voice says " four " as the green square falls'."""
    tokens = tokenize([caption], context_length=40).tokens
    assert decode_tokens(tokens) == [caption]


def test_detokenize_tolerates_unbalanced_quotes_and_empty_text() -> None:
    assert detokenize('a voice says " four') == 'a voice says "four'
    assert detokenize('" ') == '"'
    assert detokenize("") == ""


def test_decode_tokens_round_trips_clip_bpe() -> None:
    tokens = tokenize(["a red circle moves left", "clicks"], context_length=16).tokens  # [2, 16]: SOT … EOT, padding
    assert decode_tokens(tokens) == ["a red circle moves left", "clicks"]
    # generated rows may stop at max_len without padding, or hold padding after EOT
    assert decode_tokens(torch.cat([tokens[:1, :7], torch.zeros(1, 3, dtype=torch.long)], 1)) == [
        "a red circle moves left"
    ]

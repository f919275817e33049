"""The caption-quality metrics on captions like the ones issue 12 saw."""

from __future__ import annotations

import pytest

from avlops.evaluation.caption_quality import caption_quality, is_degenerate, is_empty, is_repetitive, tokens


def test_the_captions_of_issue_12_are_flagged() -> None:
    demo = "a green circle shape moves to the sound of a voice saying ' ' ' ' '"
    assert is_repetitive(demo) and is_degenerate(demo) and not is_empty(demo)
    assert is_repetitive("a a .") and is_degenerate("a a .")
    assert is_empty("") and is_empty(" . ' ") and is_degenerate("")
    good = "a green square moves left while a voice says seven"
    assert not is_repetitive(good) and not is_degenerate(good)
    assert not is_repetitive("a man talks to a man")  # a repeated bigram is ordinary language
    assert is_degenerate("a dog")  # under 3 words
    assert tokens("A dog's bark.") == ["a", "dog's", "bark", "."]


def test_shares_and_distinct_n() -> None:
    q = caption_quality(["a red circle moves", "a red circle moves", "", "a a ."])
    assert q["empty"] == 25.0 and q["repetitive"] == 25.0 and q["degenerate"] == 50.0
    # words: 4 + 4 + 0 + 2 = 10 unigrams, unique {a, red, circle, moves} = 4
    assert q["distinct-1"] == pytest.approx(40.0)
    # bigrams: 3 + 3 + 0 + 1 = 7, unique {a red, red circle, circle moves, a a} = 4
    assert q["distinct-2"] == pytest.approx(400 / 7)
    with pytest.raises(ValueError, match="no captions"):
        caption_quality([])

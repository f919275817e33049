"""What generated captions look like on their own: empty, repetitive and degenerate shares, and distinct-n.

The reference metrics (CIDEr, …) reward overlap with the references and can stay non-zero for captions that say
nothing ("a a .", "a green circle shape moves to the sound of a voice saying ' ' ' '"), so the evaluation also
reports, per captioning group (``captioning/{group}/{name}``, ``avlops.evaluation.names.CAPTION_QUALITY``):

* ``empty`` — % of captions with no word at all (nothing, or only punctuation);
* ``repetitive`` — % with a token twice in a row ("a a") or a 3-gram twice ("' ' ' '");
* ``degenerate`` — % that are empty, repetitive or shorter than :data:`MIN_WORDS` words;
* ``distinct-1`` / ``distinct-2`` — unique word n-grams / all word n-grams over the group's captions, in %
  (Li et al., 2016): low when the model says the same thing for every clip.

Tokens are lower-cased words and single punctuation marks; words are the tokens with a letter or digit.
Light on purpose (stdlib only): the gate and the report use it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

__all__ = ["MIN_WORDS", "caption_quality", "is_degenerate", "is_empty", "is_repetitive", "tokens", "words"]

MIN_WORDS = 3
_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def tokens(caption: str) -> list[str]:
    """Lower-cased words and punctuation marks: ``"A dog's bark."`` -> ``["a", "dog's", "bark", "."]``."""
    return _TOKEN.findall(caption.lower())


def words(caption: str) -> list[str]:
    return [t for t in tokens(caption) if any(c.isalnum() for c in t)]


def is_empty(caption: str) -> bool:
    return not words(caption)


def is_repetitive(caption: str) -> bool:
    """A token repeated back to back, or a 3-gram that occurs twice."""
    t = tokens(caption)
    if any(a == b for a, b in itertools.pairwise(t)):
        return True
    trigrams = list(zip(t, t[1:], t[2:], strict=False))
    return len(set(trigrams)) < len(trigrams)


def is_degenerate(caption: str) -> bool:
    return is_empty(caption) or is_repetitive(caption) or len(words(caption)) < MIN_WORDS


def _distinct(captions: Sequence[list[str]], n: int) -> float:
    grams = [tuple(w[i : i + n]) for w in captions for i in range(len(w) - n + 1)]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


def caption_quality(captions: Iterable[str]) -> dict[str, float]:
    """The ``CAPTION_QUALITY`` metrics of a group's generated captions (shares in %)."""
    texts = list(captions)
    if not texts:
        raise ValueError("no captions to describe")
    n = len(texts)
    per_caption = [words(c) for c in texts]
    values = {
        "empty": 100.0 * sum(map(is_empty, texts)) / n,
        "repetitive": 100.0 * sum(map(is_repetitive, texts)) / n,
        "degenerate": 100.0 * sum(map(is_degenerate, texts)) / n,
        "distinct-1": _distinct(per_caption, 1),
        "distinct-2": _distinct(per_caption, 2),
    }
    return values

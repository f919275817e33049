"""Captioning metrics through the reference implementation, ``pycocoevalcap``, as both papers score them.

Candidates and references go through its PTBTokenizer (Stanford CoreNLP, lower-cased, punctuation removed), then
BLEU-4, METEOR 1.5, ROUGE-L and CIDEr (pycocoevalcap's ``Cider``, the COCO implementation with its Gaussian length
penalty, as in VALOR's vendored copy). Scores are ×100 as the papers report them (the papers round to 2 decimals
for display; the values here are not rounded). The tokenizer and METEOR are Java programs: :func:`require_java`
checks for a runtime first, so a missing one is named instead of failing deep inside a subprocess.

Generated token ids are turned back into text with the same CLIP BPE tokenizer that preprocessing used, then
detokenised (:func:`decode_tokens`): CLIP's tokenizer splits punctuation off words, so its decoding reads
`a voice says " four " as a low - pitched tone plays , it 's loud` (and numbers digit by digit); the caption is
written as a sentence again (`a voice says "four" as a low-pitched tone plays, it's loud`). The metrics are
unaffected by the spacing of punctuation (the PTB tokenizer splits it off and drops it) but see hyphenated words and
numbers as the references have them.
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from avlops.evaluation.names import CAPTION_METRICS
from avlops.models.vla import EOT_TOKEN_ID, SOT_TOKEN_ID

__all__ = ["JavaNotFoundError", "caption_scores", "decode_tokens", "detokenize", "require_java", "score_caption_sets"]

_JAVA_HELP = (
    "pycocoevalcap's PTB tokenizer and METEOR run as Java programs. Install a Java runtime (Debian/Ubuntu: "
    "apt-get install default-jre-headless) or turn captioning off (evaluate.captioning: [] in params.yaml, or "
    "--captioning with no group)"
)


class JavaNotFoundError(RuntimeError):
    """No usable Java runtime for the caption metrics."""


def require_java(java: str = "java") -> str:
    """The ``java -version`` banner's first line; raises :class:`JavaNotFoundError` naming what is missing."""
    path = shutil.which(java)
    if path is None:
        raise JavaNotFoundError(f"captioning metrics need a Java runtime, but `{java}` is not on PATH. {_JAVA_HELP}")
    try:
        done = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise JavaNotFoundError(f"captioning metrics need a Java runtime, but `{path} -version` failed: {err}") from err
    if done.returncode != 0:
        raise JavaNotFoundError(
            f"captioning metrics need a Java runtime, but `{path} -version` exited {done.returncode}: "
            f"{done.stderr.strip()[:200]}. {_JAVA_HELP}"
        )
    return (done.stderr or done.stdout).strip().splitlines()[0] if (done.stderr or done.stdout).strip() else path


#: (pattern, replacement) applied in order to CLIP's decoded text, whose punctuation stands apart from the words.
_JOINS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r" '(s|t|re|ve|m|ll|d)\b"), r"'\1"),  # it 's -> it's, don 't -> don't
    (re.compile(r"(?<=\d) (?=\d)"), ""),  # CLIP splits every digit: 2 0 0 0 -> 2000
    (re.compile(r"(\d) ([.,]) (?=\d)"), r"\1\2"),  # 3 . 5 -> 3.5
    (re.compile(r"(\w) - (?=\w)"), r"\1-"),  # low - pitched -> low-pitched
    (re.compile(r" ([,.!?;:%)\]}])"), r"\1"),  # tone , -> tone,
    (re.compile(r"([(\[{]) "), r"\1"),  # ( yes -> (yes
)


def detokenize(text: str) -> str:
    """CLIP BPE decoded text -> a sentence: punctuation back against its word, double quotes around what they quote
    (alternately opening and closing), hyphens and contractions joined."""
    words: list[str] = []
    opening = True
    glue_next = False
    for word in text.split():
        if word == '"':
            if opening:
                words.append('"')
                glue_next = True
            elif words:
                words[-1] += '"'
            else:
                words.append('"')
            opening = not opening
            continue
        if glue_next:
            words[-1] += word
            glue_next = False
        else:
            words.append(word)
    out = " ".join(words)
    for pattern, replacement in _JOINS:
        out = pattern.sub(replacement, out)
    return out


def decode_tokens(tokens: Tensor) -> list[str]:
    """Token ids [B, n] (SOT … EOT, zero padding) -> caption strings (CLIP BPE decoded, then :func:`detokenize`)."""
    from avlops.preprocessing.text import get_tokenizer  # open_clip: imported on first use

    tok = get_tokenizer()
    out = []
    for row in tokens.tolist():
        ids = row[1:] if row and row[0] == SOT_TOKEN_ID else row
        if EOT_TOKEN_ID in ids:
            ids = ids[: ids.index(EOT_TOKEN_ID)]
        out.append(detokenize(tok.decode(ids)))
    return out


def score_caption_sets(
    references: Mapping[str, Sequence[str]], candidates: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, float]]:
    """Score several candidate sets (e.g. one per modality group) against the same references.

    ``references``: clip id -> reference captions; ``candidates``: set name -> (clip id -> one generated caption).
    Each set is scored over its own clips (which must all have references), as ``COCOEvalCap`` does over the ids in
    the results. One PTB tokenizer run serves every set (and one METEOR process every call). Returns set name ->
    metric -> score.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sets = {name: dict(c) for name, c in candidates.items() if c}
    if not sets:
        return {}
    for name, cands in sets.items():
        missing = sorted(set(cands) - set(references))
        if missing:
            raise ValueError(f"{name}: no references for {len(missing)} clip(s): {', '.join(missing[:5])}")
        empty = sorted(c for c in cands if not references[c])
        if empty:
            raise ValueError(f"{name}: empty reference list for {', '.join(empty[:5])}")
    require_java()
    used = sorted({c for cands in sets.values() for c in cands})
    # one tokenizer run: keys are (kind, clip) pairs flattened to strings the tokenizer only passes through
    raw: dict[str, list[dict[str, str]]] = {f"ref\n{c}": [{"caption": r} for r in references[c]] for c in used}
    for name, cands in sets.items():
        raw.update({f"{name}\n{c}": [{"caption": text}] for c, text in cands.items()})
    tokenized: dict[str, list[str]] = PTBTokenizer().tokenize(raw)

    out = {}
    for name, cands in sets.items():
        gts = {c: tokenized[f"ref\n{c}"] for c in cands}
        res = {c: tokenized[f"{name}\n{c}"] for c in cands}
        out[name] = _score(gts, res, Bleu(4), _live_meteor(), Rouge(), Cider())
    return out


@functools.cache
def _meteor() -> Any:
    """One METEOR process per Python process: it spends seconds loading its paraphrase tables, so later evaluations
    (a checkpoint sweep, the modality experiment) reuse it. Stopped at exit."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    atexit.register(_stop, meteor.meteor_p)
    return meteor


def _live_meteor() -> Any:
    meteor = _meteor()
    if meteor.meteor_p.poll() is not None:  # the process died (killed, out of memory): start a new one
        _meteor.cache_clear()
        meteor = _meteor()
    return meteor


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _score(gts: dict[str, list[str]], res: dict[str, list[str]], *scorers: Any) -> dict[str, float]:
    bleu, meteor, rouge, cider = scorers
    b, _ = bleu.compute_score(gts, res, verbose=0)
    values = (b[3], *(scorer.compute_score(gts, res)[0] for scorer in (meteor, rouge, cider)))
    return {name: 100.0 * float(v) for name, v in zip(CAPTION_METRICS, values, strict=True)}


def caption_scores(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> dict[str, float]:
    """BLEU-4, METEOR, ROUGE-L and CIDEr (×100) of one generated caption per clip against its references."""
    return score_caption_sets(references, {"captions": candidates}).get("captions", {})

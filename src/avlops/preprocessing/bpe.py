"""CLIP's byte-pair-encoding tokenizer without torch: the algorithm of OpenAI CLIP's ``simple_tokenizer.py`` (MIT,
as open_clip ships it, ``clean="lower"``) over the vocabulary file open_clip ships.

Why not open_clip's own class: importing ``open_clip.tokenizer`` imports torch, torchvision and timm (~0.5 GB and
seconds per process), and the served text preprocessing needs none of them. The vocabulary is located through the
installed package's files without importing it. ``tests/preprocessing/test_text.py`` checks the ids equal open_clip's.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
from functools import lru_cache
from pathlib import Path

import ftfy
import regex

__all__ = ["ClipBPE", "vocabulary_path"]

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_SPECIAL = ("<start_of_text>", "<end_of_text>")


def vocabulary_path() -> Path:
    """open_clip's BPE merges file, found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open-clip-torch is not installed: it ships the CLIP BPE vocabulary")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _VOCAB_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {_VOCAB_FILE} in the open_clip package")


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Every byte -> a printable unicode character (whitespace and control bytes moved above 255)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipBPE:
    """``encode(text) -> ids`` (without SOT/EOT) and ``decode(ids) -> text``, as open_clip's ``SimpleTokenizer``."""

    def __init__(self, path: Path | None = None) -> None:
        with gzip.open(path or vocabulary_path()) as fh:
            lines = fh.read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges), *_SPECIAL]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.ranks = {(m[0], m[1]): i for i, m in enumerate(merges)}
        self.byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        self.cache: dict[str, str] = {t: t for t in _SPECIAL}
        self.pattern = regex.compile(
            "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self.sot_token_id, self.eot_token_id = (self.encoder[t] for t in _SPECIAL)
        self.vocab_size = len(self.encoder)

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):  # merge every occurrence of the best pair, left to right
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        byte_chars = _bytes_to_unicode()
        ids: list[int] = []
        for token in self.pattern.findall(_clean(text)):
            chars = "".join(byte_chars[b] for b in token.encode("utf-8"))
            ids += [self.encoder[t] for t in self._bpe(chars).split(" ")]
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[i] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")

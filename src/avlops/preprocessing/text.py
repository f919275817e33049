"""Captions → CLIP BPE token ids ``[n_captions, context_length]`` (CLIP's tokenizer, vocabulary shipped offline).

The output equals ``open_clip.get_tokenizer("ViT-B-32")(captions)`` at the same context length: lower-cased,
whitespace-cleaned, ``<start_of_text> … <end_of_text>``, zero-padded; a caption longer than the context is cut and
its last position set to ``<end_of_text>``. The number of cut captions is reported so it can be noted.

:func:`token_ids` is numpy only (the served text preprocessing imports no torch); :func:`tokenize` wraps it in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from avlops.preprocessing.bpe import ClipBPE

if TYPE_CHECKING:
    import torch

__all__ = ["TextTensor", "get_tokenizer", "token_ids", "tokenize"]


@dataclass(frozen=True)
class TextTensor:
    tokens: torch.Tensor  # [n_captions, context_length] int64, 0 = padding
    truncated: int  # captions cut to fit the context


@lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 77) -> ClipBPE:
    """CLIP's BPE tokenizer (built once per process: reading the vocabulary takes ~0.2 s). ``context_length`` is
    kept for the callers that load it early for one context."""
    return ClipBPE()


def token_ids(captions: Sequence[str], context_length: int = 77) -> tuple[np.ndarray, int]:
    """``captions`` -> ``[n, context_length]`` int64 ids (numpy) and how many captions were cut."""
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not one string")
    tok = get_tokenizer(context_length)
    out = np.zeros((len(captions), context_length), dtype=np.int64)  # [n, ctx]
    truncated = 0
    for i, caption in enumerate(captions):
        ids = [tok.sot_token_id, *tok.encode(caption), tok.eot_token_id]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = tok.eot_token_id
            truncated += 1
        out[i, : len(ids)] = ids
    return out, truncated


def tokenize(captions: Sequence[str], context_length: int = 77) -> TextTensor:
    """Tokenise ``captions`` to ``[n, context_length]`` int64 ids, exactly as open_clip does."""
    import torch

    ids, truncated = token_ids(captions, context_length)
    return TextTensor(tokens=torch.from_numpy(ids), truncated=truncated)

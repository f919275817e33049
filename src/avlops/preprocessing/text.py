"""Captions → CLIP BPE token ids ``[n_captions, context_length]`` (open_clip's tokenizer, vocabulary shipped offline).

The output equals ``open_clip.get_tokenizer("ViT-B-32")(captions)`` at the same context length: lower-cased,
whitespace-cleaned, ``<start_of_text> … <end_of_text>``, zero-padded; a caption longer than the context is cut and
its last position set to ``<end_of_text>``. The number of cut captions is reported so it can be noted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

__all__ = ["TextTensor", "get_tokenizer", "tokenize"]


@dataclass(frozen=True)
class TextTensor:
    tokens: torch.Tensor  # [n_captions, context_length] int64, 0 = padding
    truncated: int  # captions cut to fit the context


@lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 77) -> Any:
    """open_clip's ``SimpleTokenizer`` (built once per process; importing open_clip takes a few seconds)."""
    from open_clip.tokenizer import SimpleTokenizer  # heavy (torchvision, timm): imported on first use

    return SimpleTokenizer(context_length=context_length)


def tokenize(captions: Sequence[str], context_length: int = 77) -> TextTensor:
    """Tokenise ``captions`` to ``[n, context_length]`` int64 ids, exactly as open_clip does."""
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not one string")
    tok = get_tokenizer(context_length)
    rows = [[tok.sot_token_id, *tok.encode(c), tok.eot_token_id] for c in captions]
    out = torch.zeros(len(rows), context_length, dtype=torch.long)  # [n, ctx]
    truncated = 0
    for i, ids in enumerate(rows):
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = tok.eot_token_id
            truncated += 1
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return TextTensor(tokens=out, truncated=truncated)

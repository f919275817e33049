"""Text preprocessing (``text_preprocess``): UTF-8 text -> CLIP BPE ids at the model's context, numpy only.

The ids are the training data's (``avlops.preprocessing.text.token_ids``, open_clip's tokenizer reimplemented without
torch), so this model's process imports neither torch nor open_clip.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from avlops.preprocessing.text import get_tokenizer, token_ids
from avlops.serving.contract import ModelSpec, Tensors
from avlops.serving.handler import Arrays, Handler, InputError, text_items
from avlops.serving.params import ServingLimits

__all__ = ["TextPreprocess", "clean_text"]

_T = Tensors

#: What a caption may not hold once whitespace is collapsed: control characters (C0, DEL, C1), lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(text: str, max_chars: int) -> str:
    """Collapse whitespace like the dataset contract; refuse empty, over-long or control-character text."""
    cleaned = " ".join(text.split())
    if not cleaned:
        raise InputError("text is empty")
    if len(cleaned) > max_chars:
        raise InputError(f"text has {len(cleaned)} characters (limit {max_chars})")
    if _CONTROL.search(cleaned):
        raise InputError("text contains control characters")
    return cleaned


class TextPreprocess(Handler):
    def __init__(self, spec: ModelSpec, context_length: int, limits: ServingLimits) -> None:
        super().__init__(spec)
        self.context_length = context_length
        self.limits = limits
        get_tokenizer(context_length)  # the vocabulary read now, not by the first request

    def _texts(self, request: Arrays) -> list[str]:
        return [clean_text(t, self.limits.max_text_chars) for t in text_items(request[_T.TEXT], "text")]

    def check(self, request: Arrays) -> None:
        self._texts(request)

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        per_request = [self._texts(r) for r in requests]
        tokens, _ = token_ids([t for texts in per_request for t in texts], self.context_length)
        out, start = [], 0
        for texts in per_request:
            out.append({_T.TOKENS: tokens[start : start + len(texts)]})
            start += len(texts)
        return out

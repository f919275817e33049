"""Catalogue search (``catalogue_search``): text features -> the top-k catalogue clips, in numpy.

The scores are the library's ``avlops.task.similarity_matrix`` over the T-AV group (VALOR's concatenation of frame
and audio-slice features), fine-grained (``avlops.losses.fine_similarity`` with the model's learned per-token weight
heads) or coarse (cosine of the pooled features), re-implemented here without torch so that this model's process
imports none (~0.55 GB and seconds saved per process; ``tests/serving/test_serving_handlers.py`` checks the scores
equal the library's). The weight heads are read from the version's ``model.safetensors`` and the catalogue from its
``catalogue.safetensors``; the clip side (normalised features, masks, token weights) is computed once at load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avlops.objective import ObjectiveConfig, Similarity
from avlops.serving.contract import ModelSpec, Tensors, encode_texts
from avlops.serving.handler import Arrays, Handler, InputError, stack
from avlops.serving.params import SearchSimilarity
from avlops.serving.pooling import masked_mean

__all__ = ["WEIGHT_HEADS", "CatalogueArrays", "CatalogueSearch", "fine_scores", "read_heads"]

_T = Tensors
_FORMAT = "avlops.catalogue"  # avlops.serving.catalogue.FORMAT (that module imports torch)
_MASK_FILL = -1e4  # avlops.losses._MASK_FILL: below any cosine similarity
WEIGHT_HEADS = ("text_weight_head", "video_weight_head", "audio_weight_head")


@dataclass(frozen=True)
class CatalogueArrays:
    clip_ids: list[str]
    video_feats: np.ndarray  # [N, F, C]
    video_mask: np.ndarray  # [N, F] bool
    audio_feats: np.ndarray  # [N, S, C]
    audio_mask: np.ndarray  # [N, S] bool

    @classmethod
    def load(cls, path: Path) -> CatalogueArrays:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            header = json.loads((fh.metadata() or {})[_FORMAT])
            t = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a mapping
        return cls(
            header["clip_ids"],
            t[_T.VIDEO_FEATS],
            t[_T.VIDEO_MASK].astype(bool),
            t[_T.AUDIO_FEATS],
            t[_T.AUDIO_MASK].astype(bool),
        )


def read_heads(path: Path) -> dict[str, np.ndarray]:
    """The per-token weight heads' parameters (``<head>.0.weight`` ...) of a ``model.safetensors``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys() if k.split(".")[0] in WEIGHT_HEADS}  # noqa: SIM118


def _normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis as ``torch.nn.functional.normalize`` (eps 1e-12)."""
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out


def _head(params: Mapping[str, np.ndarray], name: str, feats: np.ndarray) -> np.ndarray:
    """VALOR's weight MLP Linear(C, C)-ReLU-Linear(C, 1) on L2-normalised features [..., C] -> logits [...]."""
    h = _normalize(feats) @ params[f"{name}.0.weight"].T + params[f"{name}.0.bias"]
    out = np.maximum(h, 0.0) @ params[f"{name}.2.weight"].T + params[f"{name}.2.bias"]
    return np.asarray(out[..., 0])


def _token_weights(logits: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Masked softmax over tokens [B, N] (None = uniform); a row with no token gives zeros."""
    x = np.where(mask, logits if logits is not None else 0.0, -np.inf).astype(np.float32)
    top = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(top), top, 0.0))
    total = e.sum(axis=-1, keepdims=True)
    out: np.ndarray = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return out


def fine_scores(
    a: np.ndarray, a_mask: np.ndarray, wa: np.ndarray, b: np.ndarray, b_mask: np.ndarray, wb: np.ndarray
) -> np.ndarray:
    """VALOR's fine-grained similarity of normalised a [Na, La, C] and b [Nb, Lb, C] with token weights (softmaxed)
    wa [Na, La], wb [Nb, Lb] -> [Na, Nb]: (Σ_t wa_t max_v cos + Σ_v wb_v max_t cos) / 2."""
    na, la, _ = a.shape
    nb, lb, _ = b.shape
    cos = (a.reshape(na * la, -1) @ b.reshape(nb * lb, -1).T).reshape(na, la, nb, lb).transpose(0, 2, 1, 3)
    a2b = np.where(b_mask[None, :, None, :], cos, _MASK_FILL).max(axis=-1)  # [Na, Nb, La]
    b2a = np.where(a_mask[:, None, :, None], cos, _MASK_FILL).max(axis=-2)  # [Na, Nb, Lb]
    return ((a2b * wa[:, None, :]).sum(-1) + (b2a * wb[None]).sum(-1)) / 2  # type: ignore[no-any-return]


class CatalogueSearch(Handler):
    def __init__(
        self,
        spec: ModelSpec,
        heads: Mapping[str, np.ndarray],
        catalogue: CatalogueArrays,
        objective: ObjectiveConfig,
        similarity: SearchSimilarity,
        max_top_k: int,
    ) -> None:
        super().__init__(spec)
        self.heads = {k: np.asarray(v, dtype=np.float32) for k, v in heads.items()}
        self.similarity = objective.similarity if similarity is SearchSimilarity.MODEL else Similarity(similarity.value)
        self.weighted = objective.weighted_tokens
        c = catalogue
        # the T-AV clip side as avlops.task.group_features computes it: frames then audio slices, clips with neither
        # left out
        feats = np.concatenate([c.video_feats, c.audio_feats], axis=1).astype(np.float32)  # [N, F+S, C]
        mask = np.concatenate([c.video_mask, c.audio_mask], axis=1)  # [N, F+S]
        keep = np.asarray(mask.any(axis=1), dtype=bool)  # [N]
        logits = np.concatenate(
            [
                _head(self.heads, "video_weight_head", c.video_feats),
                _head(self.heads, "audio_weight_head", c.audio_feats),
            ],
            axis=1,
        )
        self.feats, self.mask = _normalize(feats[keep]), mask[keep]
        self.weights = _token_weights(logits[keep] if self.weighted else None, self.mask)
        self.pooled = _normalize(masked_mean(feats[keep], mask[keep]))  # [N', C] (coarse)
        self.ids = encode_texts([i for i, k in zip(c.clip_ids, list(keep), strict=True) if k])  # [N', longest id] UTF-8
        self.max_top_k = min(max_top_k, int(keep.sum()))

    def check(self, request: Arrays) -> None:
        for k in request[_T.TOP_K].reshape(-1):
            if not 1 <= int(k) <= self.max_top_k:
                raise InputError(f"top_k must be in [1, {self.max_top_k}], got {int(k)}")

    def scores(self, token_feats: np.ndarray, token_mask: np.ndarray, pooled: np.ndarray) -> np.ndarray:
        """Text [B] x catalogue [N'] scores [B, N']."""
        if self.similarity is Similarity.COARSE:
            return _normalize(pooled.astype(np.float32)) @ self.pooled.T  # type: ignore[no-any-return]
        keep = max(int(token_mask.sum(axis=1).max()), 1)  # positions after the longest caption are masked
        feats, mask = token_feats[:, :keep].astype(np.float32), token_mask[:, :keep].astype(bool)
        logits = _head(self.heads, "text_weight_head", feats) if self.weighted else None
        return fine_scores(_normalize(feats), mask, _token_weights(logits, mask), self.feats, self.mask, self.weights)

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        scores = self.scores(
            stack(requests, _T.TOKEN_FEATS), stack(requests, _T.TOKEN_MASK), stack(requests, _T.TEXT_EMBED)
        )
        k_max = int(stack(requests, _T.TOP_K).max())
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k_max]  # [B, k_max], ties by catalogue order
        top = np.take_along_axis(scores, order, axis=1)
        out, row = [], 0
        for r in requests:
            n = int(r[_T.TOP_K].shape[0])
            k = int(r[_T.TOP_K].reshape(-1).max())  # one k per request's rows (they are answered together)
            out.append(
                {
                    _T.CLIP_IDS: self.ids[order[row : row + n, :k]],  # [n, k, longest id]
                    _T.SCORES: top[row : row + n, :k].astype(np.float32),
                }
            )
            row += n
        return out

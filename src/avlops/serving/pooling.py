"""Clip pooling: one embedding per modality group from the frame and audio-slice features (``clip_pool``).

numpy only, so the ``clip_pool`` model process imports no torch: the same arithmetic as the library's
``avlops.losses.masked_mean`` over ``avlops.models.vla.fuse_audiovisual``'s concatenation (the handler tests check the
two agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avlops.serving.contract import Tensors
from avlops.serving.encoders import split_outputs
from avlops.serving.handler import Arrays, Handler, batch_sizes, stack

__all__ = ["ClipPool", "masked_mean", "pool_groups"]

_T = Tensors


def masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """x [B, N, C], mask [B, N] -> mean over the kept items [B, C] (rows with none kept give zeros)."""
    m = mask.astype(x.dtype)[..., None]  # [B, N, 1]
    out: np.ndarray = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
    return out


def pool_groups(
    video: np.ndarray, video_mask: np.ndarray, audio: np.ndarray, audio_mask: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-group clip embeddings as the coarse similarity pools them: the masked mean of the frames (T-V), of the audio
    slices (T-A; zeros without sound) and of both (T-AV, VALOR's concatenation) -> [B, C] each."""
    video_mask, audio_mask = video_mask.astype(bool), audio_mask.astype(bool)
    fused = np.concatenate([video, audio], axis=1)  # [B, F+S, C]
    fused_mask = np.concatenate([video_mask, audio_mask], axis=1)  # [B, F+S]: a clip without sound keeps its frames
    return {
        _T.TV_EMBED: masked_mean(video, video_mask),
        _T.TA_EMBED: masked_mean(audio, audio_mask),
        _T.TAV_EMBED: masked_mean(fused, fused_mask),
    }


class ClipPool(Handler):
    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        t = {s.name: stack(requests, s.name) for s in self.spec.inputs}
        pooled = pool_groups(t[_T.VIDEO_FEATS], t[_T.VIDEO_MASK], t[_T.AUDIO_FEATS], t[_T.AUDIO_MASK])
        out = {k: v.astype(np.float32, copy=False) for k, v in pooled.items()}
        return split_outputs(out, batch_sizes(requests))

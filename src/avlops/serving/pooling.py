"""Clip pooling: one embedding per modality group from the frame and audio-slice features (``clip_pool``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from avlops.losses import masked_mean
from avlops.models.vla import fuse_audiovisual
from avlops.serving.contract import Tensors
from avlops.serving.encoders import split_outputs
from avlops.serving.handler import Arrays, Handler, batch_sizes, stack

__all__ = ["ClipPool", "pool_groups"]

_T = Tensors


def pool_groups(
    video: torch.Tensor, video_mask: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-group clip embeddings as the coarse similarity pools them: the masked mean of the frames (T-V), of the audio
    slices (T-A; zeros without sound) and of both (T-AV, VALOR's concatenation) -> [B, C] each."""
    has_audio = audio_mask.any(dim=1)  # [B]
    fused = fuse_audiovisual(video, audio, has_audio, video_mask, audio_mask)  # [B, F+S, C], [B, F+S]
    return {
        _T.TV_EMBED: masked_mean(video, video_mask),
        _T.TA_EMBED: masked_mean(audio, audio_mask),
        _T.TAV_EMBED: masked_mean(fused.feats, fused.mask),
    }


class ClipPool(Handler):
    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        t = {s.name: torch.from_numpy(np.ascontiguousarray(stack(requests, s.name))) for s in self.spec.inputs}
        with torch.inference_mode():
            pooled = pool_groups(t[_T.VIDEO_FEATS], t[_T.VIDEO_MASK], t[_T.AUDIO_FEATS], t[_T.AUDIO_MASK])
        return split_outputs({k: v.numpy() for k, v in pooled.items()}, batch_sizes(requests))

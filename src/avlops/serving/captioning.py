"""Captioning: the library's beam search (``VLAModel.generate``) with each decoder step run by an exported graph.

Why the step and not the loop is exported (bench/results/serving.md): one step of the ``small`` decoder costs
~5.3 ms eager and ~1.4 ms in onnxruntime (the 128 x 49409 LM head dominates), while beam search is data-dependent
control flow that ONNX cannot express. Running the step in this process keeps the loop in the library (one source of
truth for decoding) and spares a Triton round trip per token that a BLS call to a separate step model would cost.
:class:`OnnxStepModel` is a ``VLAModel`` whose ``caption_logits`` at the last position (what ``generate`` asks for)
come from the graph; anything else falls back to eager. Registration checks that both decode the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avlops.evaluation.captioning import decode_tokens
from avlops.modality import ModalityGroup
from avlops.models.vla import VLAConfig, VLAModel
from avlops.objective import CaptionObjective, ObjectiveConfig
from avlops.preprocessing.text import get_tokenizer
from avlops.serving.contract import ModelSpec, Tensors, encode_texts
from avlops.serving.encoders import onnx_session
from avlops.serving.handler import Arrays, Handler, stack
from avlops.serving.params import ServingLimits
from avlops.task import Batch, caption_memory

__all__ = ["CaptionDecoder", "OnnxStepModel", "caption_group", "generate_from_features"]

_T = Tensors


class OnnxStepModel(VLAModel):
    """A VLA model whose decoder step at the last position runs ``step_path`` (DecoderStepExport's graph)."""

    def __init__(self, cfg: VLAConfig, step_path: Path) -> None:
        super().__init__(cfg)
        self.step: Any = onnx_session(step_path)

    def caption_logits(
        self, tokens: Tensor, memory: Tensor, memory_mask: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        last_only = positions is not None and bool(positions[:, -1].all()) and int(positions.sum()) == len(positions)
        if not last_only:
            return super().caption_logits(tokens, memory, memory_mask, positions)
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool)
        feeds = {
            _T.TOKENS: tokens.numpy(),
            "memory": memory.float().contiguous().numpy(),
            "memory_mask": memory_mask.bool().numpy(),
        }
        (logits,) = self.step.run(None, feeds)
        return torch.from_numpy(logits)  # [N, V]


def caption_group(objective: ObjectiveConfig) -> ModalityGroup:
    """The memory captions are generated from: T-AV when the decoder was trained on it, else its first group."""
    groups = (objective.caption or CaptionObjective()).groups
    return ModalityGroup.T_AV if ModalityGroup.T_AV in groups else groups[0]


@torch.inference_mode()
def generate_from_features(
    model: VLAModel,
    video: Tensor,
    video_mask: Tensor,
    audio: Tensor,
    audio_mask: Tensor,
    objective: ObjectiveConfig,
    limits: ServingLimits,
) -> Tensor:
    """Encoder features (video [B, F, C], audio [B, S, C] and masks) -> caption token ids [B, n]."""
    batch = Batch(
        tokens=torch.zeros(video.shape[0], 1, dtype=torch.long),
        frames=torch.empty(0),
        fbank=torch.empty(0),
        has_audio=audio_mask.any(dim=1),
        audio_type_weight=torch.zeros(video.shape[0]),
        video_mask=video_mask,
        audio_mask=audio_mask,
    )
    memory, _ = caption_memory(model, video, audio, batch, caption_group(objective), keep_all=True)
    return model.generate(
        memory.feats,
        memory.mask,
        max_len=limits.caption_max_len,
        beam_size=limits.caption_beam_size,
        length_penalty=limits.caption_length_penalty,
        min_len=min(limits.caption_min_len, limits.caption_max_len - 2),
        no_repeat_ngram=limits.caption_no_repeat_ngram,
        style=(objective.caption or CaptionObjective()).style,
    )


class CaptionDecoder(Handler):
    def __init__(self, spec: ModelSpec, model: VLAModel, objective: ObjectiveConfig, limits: ServingLimits) -> None:
        super().__init__(spec)
        self.model = model.eval()
        self.objective = objective
        self.limits = limits
        if caption_group(objective) is ModalityGroup.T_A:
            raise ValueError("captioning from audio alone is not served (the decoder ensemble reads video and audio)")
        get_tokenizer()  # decode_tokens' tokenizer, loaded now rather than by the first request

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        def t(name: str) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(stack(requests, name)))

        tokens = generate_from_features(
            self.model,
            t(_T.VIDEO_FEATS),
            t(_T.VIDEO_MASK),
            t(_T.AUDIO_FEATS),
            t(_T.AUDIO_MASK),
            self.objective,
            self.limits,
        )  # [B, n]
        texts = decode_tokens(tokens)  # the evaluation's detokenizer: served captions read like evaluated ones
        out, row = [], 0
        for r in requests:
            n = int(r[_T.VIDEO_FEATS].shape[0])
            out.append(
                {_T.CAPTION: encode_texts(texts[row : row + n]), _T.CAPTION_TOKENS: tokens[row : row + n].numpy()}
            )
            row += n
        return out

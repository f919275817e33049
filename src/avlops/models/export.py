"""Each encoder as an exportable module of its own: plain tensors in and out, in a fixed order.

Each wrapper is a tiny ``nn.Module`` whose ``forward`` takes and returns plain tensors; its ``INPUT_NAMES`` /
``OUTPUT_NAMES`` name the graph's tensors (the serving contract uses the same names). Every input and output has the
batch as axis 0. The one ONNX exporter is :func:`avlops.serving.export.export_graph`, which the registry uses.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from avlops.models.vla import VLAModel

__all__ = [
    "AudioEncoderExport",
    "AudioVisualEncoderExport",
    "EncoderExport",
    "TextEncoderExport",
    "VideoEncoderExport",
]


class EncoderExport(nn.Module):
    """Base of the export wrappers: holds the model, names the graph's inputs and outputs."""

    INPUT_NAMES: ClassVar[tuple[str, ...]] = ()
    OUTPUT_NAMES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: VLAModel) -> None:
        super().__init__()
        self.model = model


class TextEncoderExport(EncoderExport):
    """tokens [B, L] int64 -> token_feats [B, L, C], token_mask [B, L] bool, text_embed [B, C]."""

    INPUT_NAMES = ("tokens",)
    OUTPUT_NAMES = ("token_feats", "token_mask", "text_embed")

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model.encode_text(tokens)
        return out.token_feats, out.token_mask, out.pooled


class VideoEncoderExport(EncoderExport):
    """frames [B, F, 3, H, W] float32 -> video_feats [B, F, C]."""

    INPUT_NAMES = ("frames",)
    OUTPUT_NAMES = ("video_feats",)

    def forward(self, frames: Tensor) -> Tensor:
        return self.model.encode_video(frames)


class AudioEncoderExport(EncoderExport):
    """fbank [B, S, M, T] float32, type_weight [B] float32 -> audio_feats [B, S, C]."""

    INPUT_NAMES = ("fbank", "type_weight")
    OUTPUT_NAMES = ("audio_feats",)

    def forward(self, fbank: Tensor, type_weight: Tensor) -> Tensor:
        return self.model.encode_audio(fbank, type_weight)


class AudioVisualEncoderExport(EncoderExport):
    """frames, fbank, type_weight, has_audio [B] bool -> av_feats [B, F+S, C], av_mask [B, F+S] bool."""

    INPUT_NAMES = ("frames", "fbank", "type_weight", "has_audio")
    OUTPUT_NAMES = ("av_feats", "av_mask")

    def forward(self, frames: Tensor, fbank: Tensor, type_weight: Tensor, has_audio: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model.encode_audiovisual(frames, fbank, type_weight, has_audio)
        return out.feats, out.mask

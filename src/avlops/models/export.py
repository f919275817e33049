"""ONNX export of each encoder on its own, with a dynamic batch axis.

Each wrapper is a tiny ``nn.Module`` whose ``forward`` takes and returns plain tensors in a fixed order; its
``INPUT_NAMES`` / ``OUTPUT_NAMES`` are the graph's tensor names, defined once here for export, serving configs and
clients. Every input and output has the batch as axis 0; the other axes are fixed by the example inputs
(text length, frames, slices, image and fbank sizes).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from avlops.models.vla import VLAModel

__all__ = [
    "AudioEncoderExport",
    "AudioVisualEncoderExport",
    "EncoderExport",
    "TextEncoderExport",
    "VideoEncoderExport",
    "export_onnx",
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


def export_onnx(
    module: EncoderExport,
    example_inputs: tuple[Tensor, ...],
    path: str | Path,
    *,
    dynamo: bool = True,
    opset: int = 18,
) -> Path:
    """Export ``module`` (in eval mode) to ``path`` with axis 0 of every input and output dynamic.

    ``dynamo=True`` uses ``torch.export`` (the default exporter since torch 2.9); ``dynamo=False`` the legacy
    TorchScript exporter (faster to run, deprecated). Example inputs with batch 1 are repeated to batch 2, so the
    exporter cannot specialise the batch axis to 1.
    """
    if len(example_inputs) != len(module.INPUT_NAMES):
        raise ValueError(f"{type(module).__name__} takes {module.INPUT_NAMES}, got {len(example_inputs)} inputs")
    inputs = tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # every input shares the one batch Dim; torch.export notes that it names the axis once
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used.*")
            if dynamo:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(
                    module,
                    inputs,
                    str(path),
                    input_names=list(module.INPUT_NAMES),
                    output_names=list(module.OUTPUT_NAMES),
                    dynamic_shapes=tuple({0: batch} for _ in inputs),
                    opset_version=opset,
                    dynamo=True,
                    verbose=False,
                )
            else:
                axes = {name: {0: "batch"} for name in (*module.INPUT_NAMES, *module.OUTPUT_NAMES)}
                torch.onnx.export(
                    module,
                    inputs,
                    str(path),
                    input_names=list(module.INPUT_NAMES),
                    output_names=list(module.OUTPUT_NAMES),
                    dynamic_axes=axes,
                    opset_version=opset,
                    dynamo=False,
                )
    finally:
        module.train(was_training)
    return path

"""Export of what the server runs, and the parity check that refuses an export that disagrees with eager PyTorch.

Three encoder graphs (``avlops.models.export``'s wrappers: text, video, audio) and one decoder step graph
(:class:`DecoderStepExport`), each with a dynamic batch axis (and a dynamic length for the text tokens and the decoder's
tokens and memory), tensors named by the contract. The legacy TorchScript-based exporter is used: on the ``small``
model it exports in ~0.3 s per graph against ~6 s for the dynamo exporter, and its graphs run ~15 % faster in
onnxruntime; both matched eager to ~3e-6 (bench/results/serving.md).

:func:`check_parity` runs the served code paths (the :class:`~avlops.serving.encoders.OnnxEncoder` handlers, text
trimming included, and beam search through :class:`~avlops.serving.captioning.OnnxStepModel`) against the eager
model on seeded random inputs at batch 1 and 3, and reports the largest error per output.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avlops.models.export import AudioEncoderExport, EncoderExport, TextEncoderExport, VideoEncoderExport
from avlops.models.vla import EOT_TOKEN_ID, SOT_TOKEN_ID, VLAModel
from avlops.objective import ObjectiveConfig
from avlops.serving.captioning import OnnxStepModel, generate_from_features
from avlops.serving.contract import AUDIO_ENCODER, TEXT_ENCODER, VIDEO_ENCODER, ModelSpec, Sizes, Tensors
from avlops.serving.encoders import OnnxEncoder
from avlops.serving.params import ServingLimits

__all__ = [
    "ENCODER_WRAPPERS",
    "DecoderStepExport",
    "ParityResult",
    "check_caption_parity",
    "check_encoder_parity",
    "export_decoder_step",
    "export_encoder",
    "export_graph",
]

_T = Tensors
ENCODER_WRAPPERS: dict[str, type[EncoderExport]] = {
    TEXT_ENCODER: TextEncoderExport,
    VIDEO_ENCODER: VideoEncoderExport,
    AUDIO_ENCODER: AudioEncoderExport,
}
#: the decoder step graph's tensors (internal to caption_decoder, never a Triton model of its own)
STEP_INPUTS = (_T.TOKENS, "memory", "memory_mask")
STEP_OUTPUTS = ("logits",)


class DecoderStepExport(nn.Module):
    """tokens [B, n] int64, memory [B, K, D], memory_mask [B, K] bool -> logits of the last position [B, V]."""

    def __init__(self, model: VLAModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        last = torch.zeros_like(tokens, dtype=torch.bool)
        last[:, -1] = True
        return self.model.caption_logits(tokens, memory, memory_mask, last)


def export_graph(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    names: tuple[tuple[str, ...], tuple[str, ...]],
    axes: dict[str, dict[int, str]],
    path: Path,
) -> Path:
    """Export ``module`` (in eval mode) to ONNX at ``path``: tensors named ``names`` (inputs, outputs), ``axes`` the
    dynamic axes by tensor name. The one exporter of the project (the legacy TorchScript-based one; see above)."""
    if len(inputs) != len(names[0]):
        raise ValueError(f"{type(module).__name__} takes {names[0]}, got {len(inputs)} inputs")
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=list(names[0]),
            output_names=list(names[1]),
            dynamic_axes=axes,
            opset_version=18,
            dynamo=False,
        )
    return path


def _tokens(batch: int, length: int, g: torch.Generator) -> Tensor:
    """[B, L] ids like the tokenizer's: SOT, random BPE ids, EOT at a random position, zero padding."""
    tokens = torch.randint(1, 49000, (batch, length), generator=g)
    tokens[:, 0] = SOT_TOKEN_ID
    for i, e in enumerate(torch.randint(1, length, (batch,), generator=g).tolist()):
        tokens[i, e] = EOT_TOKEN_ID
        tokens[i, e + 1 :] = 0
    return tokens


def example_inputs(name: str, sizes: Sizes, batch: int, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random inputs of an encoder, by contract name."""
    g = torch.Generator().manual_seed(seed)
    s = sizes
    if name == TEXT_ENCODER:
        return {_T.TOKENS: _tokens(batch, s.context, g)}
    if name == VIDEO_ENCODER:
        return {_T.FRAMES: torch.randn(batch, s.frames, 3, s.resolution, s.resolution, generator=g)}
    if name == AUDIO_ENCODER:
        return {
            _T.FBANK: torch.randn(batch, s.slices, s.mel_bins, s.target_length, generator=g),
            _T.TYPE_WEIGHT: torch.rand(batch, generator=g),
        }
    raise KeyError(f"no encoder {name!r}")


def export_encoder(model: VLAModel, spec: ModelSpec, sizes: Sizes, path: Path) -> Path:
    """Export the encoder ``spec.name`` of ``model`` to ``path`` with the contract's tensor names."""
    inputs = example_inputs(spec.name, sizes, batch=2)
    names = (tuple(s.name for s in spec.inputs), tuple(s.name for s in spec.outputs))
    axes = {n: {0: "batch"} for group in names for n in group}
    if spec.name == TEXT_ENCODER:  # the served text encoder trims padding: tokens and token outputs vary in length
        for n in (_T.TOKENS, _T.TOKEN_FEATS, _T.TOKEN_MASK):
            axes[n] = {0: "batch", 1: "length"}
    wrapper = ENCODER_WRAPPERS[spec.name](model)
    return export_graph(wrapper, tuple(inputs[n] for n in names[0]), names, axes, path)


def export_decoder_step(model: VLAModel, sizes: Sizes, path: Path) -> Path:
    d = model.cfg.decoder.width
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.randint(1, 49000, (2, 4), generator=g),
        torch.randn(2, sizes.frames + sizes.slices, d, generator=g),
        torch.ones(2, sizes.frames + sizes.slices, dtype=torch.bool),
    )
    axes = {
        _T.TOKENS: {0: "batch", 1: "length"},
        "memory": {0: "batch", 1: "items"},
        "memory_mask": {0: "batch", 1: "items"},
        "logits": {0: "batch"},
    }
    return export_graph(DecoderStepExport(model), inputs, (STEP_INPUTS, STEP_OUTPUTS), axes, path)


@dataclass(frozen=True)
class ParityResult:
    """One exported graph against eager: the largest absolute error per output, and the verdict."""

    model: str
    passed: bool
    max_abs_error: dict[str, float]
    tolerance: dict[str, float]
    checks: int  # input batches compared
    detail: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compare(
    got: np.ndarray, want: np.ndarray, atol: float, rtol: float, mask: np.ndarray | None = None
) -> tuple[float, bool]:
    if got.shape != want.shape:
        return float("inf"), False
    if want.dtype == np.bool_:
        return float((got != want).sum()), bool((got == want).all())
    if mask is not None:  # compare only where the mask keeps a value (token positions up to EOT)
        got, want = got[mask], want[mask]
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    ok = bool((err <= atol + rtol * np.abs(want)).all())
    return float(err.max()) if err.size else 0.0, ok


def _eager(model: VLAModel, name: str) -> Callable[..., tuple[Tensor, ...]]:
    wrapper = ENCODER_WRAPPERS[name](model).eval()

    def run(*xs: Tensor) -> tuple[Tensor, ...]:
        with torch.inference_mode():
            out = wrapper(*xs)
        return out if isinstance(out, tuple) else (out,)

    return run


def check_encoder_parity(
    model: VLAModel, spec: ModelSpec, sizes: Sizes, path: Path, atol: float = 1e-4, rtol: float = 1e-3
) -> ParityResult:
    """The served encoder (onnxruntime through its handler) against the eager wrapper at batch 1 and 3."""
    handler = OnnxEncoder(spec, path, vocab_size=sizes.vocab_size)
    eager = _eager(model, spec.name)
    worst = {s.name: 0.0 for s in spec.outputs}
    passed, detail = True, ""
    for i, batch in enumerate((1, 3)):
        inputs = example_inputs(spec.name, sizes, batch, seed=100 + i)
        feeds = {s.name: inputs[s.name].numpy().reshape(batch, *s.dims) for s in spec.inputs}
        (outcome,) = handler.handle([feeds])
        if isinstance(outcome, Exception):
            return ParityResult(spec.name, False, worst, {"atol": atol, "rtol": rtol}, i, f"served run: {outcome}")
        want = dict(zip((s.name for s in spec.outputs), eager(*(inputs[s.name] for s in spec.inputs)), strict=True))
        mask = want[_T.TOKEN_MASK].numpy() if _T.TOKEN_MASK in want else None
        for s in spec.outputs:
            use = mask if s.name == _T.TOKEN_FEATS else None
            err, ok = _compare(outcome[s.name], want[s.name].numpy(), atol, rtol, use)
            worst[s.name] = max(worst[s.name], err)
            if not ok:
                passed = False
                detail = f"{s.name} differs by {err:.3g} at batch {batch} (tolerance {atol:g} + {rtol:g}·|x|)"
    return ParityResult(spec.name, passed, worst, {"atol": atol, "rtol": rtol}, 2, detail)


def check_caption_parity(
    model: VLAModel,
    step_path: Path,
    sizes: Sizes,
    objective: ObjectiveConfig,
    limits: ServingLimits,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ParityResult:
    """Decoder step logits (onnxruntime vs eager) and the captions beam search decodes from both, on random features."""
    served = OnnxStepModel(model.cfg, step_path)
    served.load_state_dict(model.state_dict())
    served.eval()
    g = torch.Generator().manual_seed(7)
    c = sizes.embed_dim
    worst, passed, detail = 0.0, True, ""
    tokens_equal = True
    for batch in (1, 3):
        video = torch.randn(batch, sizes.frames, c, generator=g)
        audio = torch.randn(batch, sizes.slices, c, generator=g)
        video_mask = torch.ones(batch, sizes.frames, dtype=torch.bool)
        audio_mask = torch.ones(batch, sizes.slices, dtype=torch.bool)
        audio_mask[0] = False  # one clip without sound
        memory = model.caption_memory(video, audio, video_mask, audio_mask)
        seq = _tokens(batch, 6, g)[:, :5].clamp(min=1)
        last = torch.zeros_like(seq, dtype=torch.bool)
        last[:, -1] = True
        with torch.inference_mode():
            want = model.caption_logits(seq, memory.feats, memory.mask, last).numpy()
            got = served.caption_logits(seq, memory.feats, memory.mask, last).numpy()
        err, ok = _compare(got, want, atol, rtol)
        worst = max(worst, err)
        if not ok:
            passed, detail = False, f"step logits differ by {err:.3g} at batch {batch}"
        args = (video, video_mask, audio, audio_mask, objective, limits)
        eager_tokens = generate_from_features(model, *args)
        served_tokens = generate_from_features(served, *args)
        if eager_tokens.shape != served_tokens.shape or not bool((eager_tokens == served_tokens).all()):
            tokens_equal = passed = False
            detail = detail or f"beam search decodes different tokens at batch {batch}"
    return ParityResult(
        "caption_decoder",
        passed,
        {"logits": worst, "tokens_differ": 0.0 if tokens_equal else 1.0},
        {"atol": atol, "rtol": rtol},
        2,
        detail,
    )

"""The encoder handler: an exported ONNX encoder run by onnxruntime (numpy only; no torch in the computation).

Why onnxruntime inside the python backend (bench/results/serving.md has the figures): on the 2-core machine the ONNX
encoders run 2x faster than eager PyTorch (TorchScript is no faster than eager), and Triton's native onnxruntime
backend does not ship in the ``nvidia-pytriton`` wheel. The GPU repository points the same ``model.onnx`` files at the
native onnxruntime backend.

The text encoder trims the batch to its longest caption before running (the graph has a dynamic length axis): CLIP's
text transformer is causal, so every position up to a caption's EOT, and the pooled EOT feature, are the same as for
the padded input; positions after the EOT are masked (``token_mask`` False) and returned as zeros.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avlops.serving.contract import ModelSpec, Tensors
from avlops.serving.handler import Arrays, Handler, InputError, batch_sizes, stack

__all__ = ["OnnxEncoder", "onnx_session", "split_outputs"]

_T = Tensors


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session; one intra-op thread by default: Triton runs one instance per core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder(Handler):
    """One exported encoder; inputs and outputs named as in the contract (which named the graph's tensors)."""

    def __init__(self, spec: ModelSpec, path: Path, vocab_size: int | None = None, threads: int = 1) -> None:
        super().__init__(spec)
        self.session = onnx_session(path, threads)
        self.vocab_size = vocab_size  # text encoder: token ids must be below it
        self.trim = spec.name == "text_encoder"

    def check(self, request: Arrays) -> None:
        for spec in self.spec.inputs:
            x = request[spec.name]
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise InputError(f"{self.spec.name}: input {spec.name!r} holds NaN or infinite values")
        if _T.TOKENS in request and self.vocab_size is not None:
            tokens = request[_T.TOKENS]
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
                raise InputError(f"{self.spec.name}: token ids must be in [0, {self.vocab_size})")

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        feeds = {s.name: stack(requests, s.name).reshape(-1, *s.item_shape()) for s in self.spec.inputs}
        length = None
        if self.trim:
            tokens = feeds[_T.TOKENS]
            length = tokens.shape[1]
            keep = int(tokens.argmax(axis=1).max()) + 1  # through the longest caption's EOT (CLIP pools at argmax)
            feeds[_T.TOKENS] = np.ascontiguousarray(tokens[:, :keep])
        values = self.session.run([s.name for s in self.spec.outputs], feeds)
        outputs = dict(zip([s.name for s in self.spec.outputs], values, strict=True))
        if length is not None:
            outputs = {k: _pad_length(v, length) if k != _T.TEXT_EMBED else v for k, v in outputs.items()}
        return split_outputs(outputs, batch_sizes(requests))


def _pad_length(x: np.ndarray, length: int) -> np.ndarray:
    """[B, l, ...] -> [B, length, ...] with zeros (False) after position l."""
    if x.shape[1] == length:
        return x
    out = np.zeros((x.shape[0], length, *x.shape[2:]), dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


def split_outputs(outputs: Arrays, sizes: list[int]) -> list[Arrays]:
    """Batched outputs -> one dict per request of ``sizes`` items."""
    bounds = np.cumsum([0, *sizes])
    return [{k: v[a:b] for k, v in outputs.items()} for a, b in itertools.pairwise(bounds)]

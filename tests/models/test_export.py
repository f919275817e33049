"""Each encoder exported on its own to ONNX (by the registry's exporter) with a dynamic batch axis: onnxruntime agrees
with eager at B = 1 and 3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from avlops.models.export import (
    AudioEncoderExport,
    AudioVisualEncoderExport,
    EncoderExport,
    TextEncoderExport,
    VideoEncoderExport,
)
from avlops.serving.export import export_graph
from avlops.task import Batch

WRAPPERS = [TextEncoderExport, VideoEncoderExport, AudioEncoderExport, AudioVisualEncoderExport]


def export_onnx(module: EncoderExport, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """The wrapper through the one exporter, with axis 0 of every tensor dynamic."""
    names = (module.INPUT_NAMES, module.OUTPUT_NAMES)
    return export_graph(module, inputs, names, {n: {0: "batch"} for group in names for n in group}, path)


def _inputs(wrapper: type[EncoderExport], b: Batch) -> tuple[torch.Tensor, ...]:
    by_name = {
        "tokens": b.tokens,
        "frames": b.frames,
        "fbank": b.fbank,
        "type_weight": b.audio_type_weight,
        "has_audio": b.has_audio,
    }
    return tuple(by_name[n] for n in wrapper.INPUT_NAMES)


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
def test_onnx_export_matches_eager_with_dynamic_batch(wrapper, make_model, make_batch, tmp_path) -> None:
    module = wrapper(make_model())
    example = make_batch(batch=2, frames=2, slices=2, seed=1)
    path = export_onnx(module, _inputs(wrapper, example), tmp_path / "encoder.onnx")

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(wrapper.INPUT_NAMES)
    assert [o.name for o in graph.output] == list(wrapper.OUTPUT_NAMES)
    for value in (*graph.input, *graph.output):  # axis 0 is symbolic everywhere
        assert value.type.tensor_type.shape.dim[0].dim_param, value.name

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # shared cores: no spinning thread pool
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        b = make_batch(batch=batch, frames=2, slices=2, seed=10 + batch, has_audio=[True, False, True][:batch])
        inputs = _inputs(wrapper, b)
        got = session.run(None, {n: x.numpy() for n, x in zip(wrapper.INPUT_NAMES, inputs, strict=True)})
        with torch.no_grad():
            want = module(*inputs)
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(want)
        for name, g, w in zip(wrapper.OUTPUT_NAMES, got, want, strict=True):
            assert g.shape == tuple(w.shape), name
            if w.dtype == torch.bool:
                np.testing.assert_array_equal(g, w.numpy(), err_msg=name)
            else:
                np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4, err_msg=name)


def test_export_checks_the_number_of_inputs(make_model, make_batch, tmp_path) -> None:
    b = make_batch(batch=2)
    with pytest.raises(ValueError, match=r"takes \('fbank', 'type_weight'\)"):
        export_onnx(AudioEncoderExport(make_model()), (b.fbank,), tmp_path / "x.onnx")

"""The only code that talks to Triton's python backend: build a handler when a model instance loads, convert each
batch of requests to numpy arrays and back, and turn errors into responses.

Tensors cross by DLPack both ways (the numpy-2 pitfall of platform-facts: ``pb_utils.Tensor(name, array)`` returns
empty tensors), as numpy arrays. This module imports no torch, and neither do the handlers of the text
preprocessing, the encoders and the clip pooling: torch costs each process ~0.55 GB and ~2.5 s to import
(bench/results/startup.md). A torch DLPack capsule was faster per output tensor (~3 µs against ~50 µs), which is not
worth half a gigabyte per model. Models whose handler imports torch run it on one thread. Inputs arrive read-only,
so outputs are always fresh copies. A request the handler refuses gets
INVALID_ARGUMENT with the handler's message; an unexpected exception gets INTERNAL for the requests of that batch
only, its traceback goes to the server log, and the model keeps serving.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from avlops.serving.bundle import CATALOGUE_NAME, DECODER_STEP_NAME, ONNX_NAME, WEIGHTS_NAME, ServingBundle, load_model
from avlops.serving.contract import CLIP_PREPROCESS, LEGACY_MODELS, HandlerKind, ModelSpec, input_set
from avlops.serving.handler import Arrays, Handler, InputError, Outcome

__all__ = ["TritonPythonModel", "load_handler"]


def load_handler(model_name: str, folder: Path) -> Handler:
    """The handler of ``model_name`` for the version folder ``folder`` (reads its ``serving.json``)."""
    bundle = ServingBundle.read(folder)
    contract = bundle.contract()
    if model_name in LEGACY_MODELS and model_name not in contract:  # a version registered before clip_preprocess
        names, kind = LEGACY_MODELS[model_name]
        spec = replace(input_set(contract[CLIP_PREPROCESS], names, model_name), handler=kind)
    else:
        spec = contract[model_name]
    if spec.handler is None:
        raise ValueError(f"{model_name}: not a python-backend model (no handler kind)")
    return _BUILDERS[spec.handler](spec, bundle, folder)


# Each builder imports only what its handler needs, so each model process loads open_clip, torchaudio and PyAV only
# where used.
def _onnx_encoder(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.encoders import OnnxEncoder

    return OnnxEncoder(spec, folder / ONNX_NAME, vocab_size=bundle.sizes.vocab_size)


def _text_preprocess(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.text import TextPreprocess

    return TextPreprocess(spec, bundle.sizes.context, bundle.limits_config())


def _clip_preprocess(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.preprocess import ClipPreprocess

    return ClipPreprocess(spec, bundle.preprocess_config(), bundle.limits_config())


def _media_preprocess(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.preprocess import MediaPreprocess

    return MediaPreprocess(spec, bundle.preprocess_config(), bundle.limits_config())


def _array_preprocess(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.preprocess import ArrayPreprocess

    return ArrayPreprocess(spec, bundle.preprocess_config(), bundle.limits_config())


def _clip_pool(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.pooling import ClipPool

    return ClipPool(spec)


def _catalogue_search(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.serving.search import CatalogueArrays, CatalogueSearch, read_heads

    return CatalogueSearch(
        spec,
        read_heads(folder / WEIGHTS_NAME),
        CatalogueArrays.load(folder / CATALOGUE_NAME),
        bundle.objective_config(),
        bundle.search_similarity(),
        bundle.limits_config().max_top_k,
    )


def _caption_decoder(spec: ModelSpec, bundle: ServingBundle, folder: Path) -> Handler:
    from avlops.models.vla import VLAConfig
    from avlops.serving.captioning import CaptionDecoder, OnnxStepModel

    model = OnnxStepModel(VLAConfig.from_dict(bundle.model), folder / DECODER_STEP_NAME)
    model.load_state_dict(load_model(folder, bundle).state_dict())
    return CaptionDecoder(spec, model, bundle.objective_config(), bundle.limits_config())


_BUILDERS: dict[HandlerKind, Callable[[ModelSpec, ServingBundle, Path], Handler]] = {
    HandlerKind.ONNX_ENCODER: _onnx_encoder,
    HandlerKind.TEXT_PREPROCESS: _text_preprocess,
    HandlerKind.CLIP_PREPROCESS: _clip_preprocess,
    HandlerKind.MEDIA_PREPROCESS: _media_preprocess,
    HandlerKind.ARRAY_PREPROCESS: _array_preprocess,
    HandlerKind.CLIP_POOL: _clip_pool,
    HandlerKind.CATALOGUE_SEARCH: _catalogue_search,
    HandlerKind.CAPTION_DECODER: _caption_decoder,
}


class TritonPythonModel:
    """What Triton's python backend instantiates (through the version folder's thin ``model.py``)."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb: Any = importlib.import_module("triton_python_backend_utils")
        folder = Path(args["model_repository"]) / args["model_version"]
        self.handler = load_handler(args["model_name"], folder)
        self.inputs = [s.name for s in self.handler.spec.inputs]
        if "torch" in sys.modules:  # one thread per instance: intra-op threads would fight the other models
            sys.modules["torch"].set_num_threads(1)

    def _arrays(self, request: Any) -> Arrays:
        out = {}
        for name in self.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is not None:  # a missing input is refused by the handler's contract check
                out[name] = np.from_dlpack(tensor)
        return out

    def _response(self, outcome: Outcome) -> Any:
        pb = self.pb
        if isinstance(outcome, InputError):
            return pb.InferenceResponse(error=pb.TritonError(str(outcome), pb.TritonError.INVALID_ARG))
        if isinstance(outcome, Exception):
            return pb.InferenceResponse(error=pb.TritonError(f"internal error: {outcome}", pb.TritonError.INTERNAL))
        tensors = [pb.Tensor.from_dlpack(k, np.array(v, copy=True, order="C")) for k, v in outcome.items()]
        return pb.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            outcomes = self.handler.handle([self._arrays(r) for r in requests])
        except Exception as err:  # a bug, not bad input: fail this batch, log why, keep serving
            self.pb.Logger.log_error(f"{self.handler.spec.name}: {traceback.format_exc()}")
            outcomes = [err] * len(requests)
        return [self._response(o) for o in outcomes]

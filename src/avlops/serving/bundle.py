"""The files of one served model version, and reading them back in a python-backend process.

Every version folder of every python model holds ``serving.json`` (a :class:`ServingBundle`: the registry version,
the contract sizes, the model and objective configs, the preprocessing config the model was trained with, the request
limits and the search similarity); the encoders hold ``model.onnx``; the catalogue search and the caption decoder
hold the weights (``model.safetensors``) and the catalogue search its ``catalogue.safetensors``. A version folder is
self-contained, so Triton can fetch it alone (e.g. from object storage).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avlops.preprocessing.params import PreprocessConfig
from avlops.serving.contract import ModelSpec, Sizes, repository_models
from avlops.serving.params import BatchingConfig, SearchSimilarity, ServingLimits

if TYPE_CHECKING:
    from avlops.models.vla import VLAModel
    from avlops.objective import ObjectiveConfig

__all__ = [
    "BUNDLE_NAME",
    "CATALOGUE_NAME",
    "DECODER_STEP_NAME",
    "ONNX_NAME",
    "WEIGHTS_NAME",
    "ServingBundle",
    "load_model",
]

BUNDLE_NAME = "serving.json"
ONNX_NAME = "model.onnx"  # Triton's default file name for the onnxruntime backend (the GPU repository)
DECODER_STEP_NAME = "decoder_step.onnx"
WEIGHTS_NAME = "model.safetensors"
CATALOGUE_NAME = "catalogue.safetensors"


@dataclass(frozen=True)
class ServingBundle:
    version: int
    sizes: Sizes
    model: dict[str, Any]  # VLAConfig.to_dict()
    objective: dict[str, Any]  # ObjectiveConfig as plain values
    preprocess: dict[str, Any]  # PreprocessConfig the model was trained with
    limits: dict[str, Any]  # ServingLimits
    batching: dict[str, Any]  # BatchingConfig
    similarity: str  # the resolved SearchSimilarity (fine or coarse)

    def write(self, folder: Path) -> Path:
        path = folder / BUNDLE_NAME
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> ServingBundle:
        data = json.loads((folder / BUNDLE_NAME).read_text(encoding="utf-8"))
        return cls(**{**data, "sizes": Sizes(**data["sizes"])})

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.model_validate(self.preprocess)

    def limits_config(self) -> ServingLimits:
        return ServingLimits.model_validate(self.limits)

    def batching_config(self) -> BatchingConfig:
        return BatchingConfig.model_validate(self.batching)

    def contract(self) -> dict[str, ModelSpec]:
        """This version's models by name (the contract at its sizes and batching)."""
        return {m.name: m for m in repository_models(self.sizes, self.batching_config())}

    def search_similarity(self) -> SearchSimilarity:
        return SearchSimilarity(self.similarity)

    def objective_config(self) -> ObjectiveConfig:
        from avlops.objective import ObjectiveConfig

        return ObjectiveConfig.from_dict(self.objective)


def load_model(folder: Path, bundle: ServingBundle | None = None) -> VLAModel:
    """The eager model of a version folder (or a checkpoint folder with ``model_config.json``), in eval mode."""
    from safetensors.torch import load_model as load_weights

    from avlops.models.vla import VLAConfig, VLAModel

    if bundle is not None:
        config = bundle.model
    else:
        config = json.loads((folder / "model_config.json").read_text(encoding="utf-8"))
    model = VLAModel(VLAConfig.from_dict(config))
    missing, unexpected = load_weights(model, str(folder / WEIGHTS_NAME), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not fit the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    return model.eval()

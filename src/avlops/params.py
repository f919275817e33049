"""The whole ``params.yaml``: one section per stage, each the same model the stage's CLI command loads.

Every section model lives in a light ``params`` module (no torch, Great Expectations or Feast import), so loading
the whole file is cheap.
"""

from __future__ import annotations

from pydantic import Field

from avlops.config import StrictModel
from avlops.data.params import CheckConfig, SynthConfig, VersioningConfig
from avlops.evaluation.params import EvaluateConfig
from avlops.features.params import FeaturesConfig
from avlops.preprocessing.params import PreprocessConfig
from avlops.registry.params import RegisterConfig
from avlops.rollout.params import DeployConfig
from avlops.serving.params import ServeConfig
from avlops.training.params import TrainConfig
from avlops.validation.params import ValidateConfig

__all__ = ["ProjectParams"]


class ProjectParams(StrictModel):
    synth: SynthConfig = Field(default_factory=SynthConfig)
    check: CheckConfig = Field(default_factory=CheckConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    versioning: VersioningConfig = Field(default_factory=VersioningConfig)
    registry: RegisterConfig = Field(default_factory=RegisterConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)

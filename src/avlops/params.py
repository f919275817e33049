"""The whole ``params.yaml``: one section per stage, each the same model the stage's CLI command loads."""

from __future__ import annotations

from pydantic import Field

from avlops.config import StrictModel
from avlops.data.params import CheckConfig, SynthConfig, VersioningConfig

__all__ = ["ProjectParams"]


class ProjectParams(StrictModel):
    synth: SynthConfig = Field(default_factory=SynthConfig)
    check: CheckConfig = Field(default_factory=CheckConfig)
    versioning: VersioningConfig = Field(default_factory=VersioningConfig)

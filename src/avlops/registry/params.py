"""The ``registry`` section of ``params.yaml``: where versions are published and how they are served.

Light on purpose (pydantic only), like every section model.
"""

from __future__ import annotations

from pydantic import Field

from avlops.config import StrictModel
from avlops.serving.params import BatchingConfig, SearchSimilarity, ServingLimits

__all__ = ["RegisterConfig"]


class RegisterConfig(StrictModel):
    """``avlops register``: a blessed checkpoint into a new version of the registry's model repository."""

    checkpoint: str | None = Field(None, description="a checkpoint folder, or a run folder (its newest checkpoint)")
    eval_dir: str | None = Field(None, description="the evaluation folder holding blessing.json")
    data: str | None = Field(None, description="the preprocessed training data (default: the run's config.json)")
    catalogue: str | None = Field(None, description="a built catalogue (default: built from the data)")
    quarantine: list[str] = Field(
        default_factory=list,
        description="quarantine.jsonl files (`avlops data validate`, `data check`) whose clips a catalogue built "
        "here leaves out",
    )
    repository: str = Field("artifacts/registry", description="the registry folder (models/, gpu/, versions/)")
    alias: str = Field("challenger", description="alias of the new version (the first version is also champion)")
    similarity: SearchSimilarity = SearchSimilarity.MODEL
    parity_atol: float = Field(1e-4, gt=0, description="exported vs eager: |served - eager| <= atol + rtol * |eager|")
    parity_rtol: float = Field(1e-3, ge=0)
    limits: ServingLimits = Field(default_factory=ServingLimits)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)

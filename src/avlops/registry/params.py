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

    repository: str = Field("artifacts/registry", description="the registry folder (models/, gpu/, versions/)")
    alias: str = Field("challenger", description="alias of the new version (the first version is also champion)")
    similarity: SearchSimilarity = SearchSimilarity.MODEL
    parity_atol: float = Field(1e-4, gt=0, description="exported vs eager: |served - eager| <= atol + rtol * |eager|")
    parity_rtol: float = Field(1e-3, ge=0)
    limits: ServingLimits = Field(default_factory=ServingLimits)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)

"""The ``validation`` section of ``params.yaml`` (not ``validate``: that name shadows a pydantic method): what
``avlops data validate`` checks and when it fails."""

from __future__ import annotations

from pydantic import Field, model_validator

from avlops.config import StrictModel
from avlops.data.schema import Split

__all__ = ["ValidateConfig"]


class ValidateConfig(StrictModel):
    """Thresholds of the manifest and preprocessing-statistics suites, and the gate."""

    manifest: str = "data/synth/manifest.jsonl"
    stats: str | None = Field(None, description="stats.parquet written by `avlops preprocess`; None: manifest only")
    out: str = "reports/validate"
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="fail when more clips than this are bad")
    #: captions of train clips may not appear in these splits (exact text, case and spacing ignored); () turns it off
    leak_splits: tuple[Split, ...] = (Split.TEST,)
    min_duration_s: float = Field(0.1, gt=0.0)
    max_duration_s: float = Field(600.0, gt=0.0)
    min_frames: int = Field(1, ge=0, description="for clips with a video (a still image has one frame)")
    max_fps: float = Field(240.0, gt=0.0)
    min_width: int = Field(16, ge=1)
    min_height: int = Field(16, ge=1)
    min_sample_rate: int = Field(8000, ge=1)
    max_sample_rate: int = Field(96000, ge=1)
    allowed_sample_rates: tuple[int, ...] = Field((), description="when not empty, the only sample rates accepted")
    max_channels: int = Field(8, ge=1)
    #: RMS level below which a clip labelled verbal/nonverbal/mixed counts as silent (no audio reads about -120)
    min_loudness_dbfs: float = Field(-60.0, le=0.0)

    @model_validator(mode="after")
    def _ranges(self) -> ValidateConfig:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be below max_duration_s")
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("min_sample_rate must not exceed max_sample_rate")
        if Split.TRAIN in self.leak_splits:
            raise ValueError("leak_splits lists the splits compared with train; train itself cannot be one")
        return self

"""Config of the modality experiment (``configs/experiments/modality.yaml``): corpus, recipe, variants and seeds.

Light on purpose, like every ``params`` module: the sections are the same models the stages themselves load
(``SynthConfig``, ``PreprocessConfig``, ``TrainConfig``, ``EvaluateConfig``); the experiment only fills in their
paths, so a bad key anywhere is reported before anything runs.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from avlops.config import StrictModel
from avlops.data.params import SynthConfig
from avlops.evaluation.params import EvaluateConfig
from avlops.preprocessing.params import PreprocessConfig
from avlops.training.params import TrainConfig

__all__ = ["ModalityExperimentConfig", "Variant"]


class Variant(StrEnum):
    """One arm of the experiment: how its model and objective differ from the recipe in ``train``."""

    FULL = "full"  # VALOR-B: MGA over T-V, T-A, T-AV, captions from audio + video, CLIP4VLA's audio type token
    VIDEO_ONLY = "video_only"  # VALOR⁻B: trained and captioned from the frames alone (the audio tower never trains)
    NO_TYPE_TOKEN = "no_type_token"  # FULL without the audio type token (CLIP4VLA's ablation)


class ModalityExperimentConfig(StrictModel):
    """Train every variant with every seed on one synthetic corpus, evaluate each on its test split, tabulate."""

    out: str = Field("artifacts/experiments/modality", description="corpus, runs, evaluations and the table")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="training seeds per variant")
    variants: tuple[Variant, ...] = Field(tuple(Variant), min_length=1)
    synth: SynthConfig = Field(default_factory=SynthConfig, description="the corpus; `out` is set by the experiment")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="`manifest`/`out` are set too")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the FULL recipe; `seed`, `data`, `out` set")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="checkpoint, data and out are set")

    @field_validator("seeds", "variants")
    @classmethod
    def _unique(cls, v: tuple[int | Variant, ...]) -> tuple[int | Variant, ...]:
        if len(set(v)) != len(v):
            raise ValueError("values must be unique")
        return v

"""Config section of the evaluation stage (``evaluate`` in ``params.yaml``) and of its gate (``evaluate.bless``).

Light on purpose (no torch): the CLI, ``params.yaml`` and the registration step load it cheaply. Defaults follow the
papers' protocol (papers.md §1.10): the ``test`` split, every caption a query, beam search with beam 3, dual softmax
reported as a separate row.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from avlops.config import StrictModel
from avlops.data.schema import Split
from avlops.evaluation.names import is_metric
from avlops.modality import Modality

__all__ = ["BlessingConfig", "Bound", "DefaultChecks", "EvaluateConfig"]

ALL_GROUPS = (Modality.VIDEO, Modality.AUDIO, Modality.AUDIOVISUAL)


def _check_metric_names(names: list[str]) -> None:
    bad = [n for n in names if not is_metric(n)]
    if bad:
        raise ValueError(
            f"unknown metric name(s) {', '.join(bad)}; names look like retrieval/t2av/R@1, retrieval/v2t/MedR, "
            "retrieval-dsl/t2v/R@5 or captioning/av/CIDEr (avlops.evaluation.names)"
        )


class Bound(StrictModel):
    """A metric must be at least ``min`` and/or at most ``max``."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class DefaultChecks(StrictModel):
    """Checks every evaluation gets unless ``evaluate.bless.defaults`` is null or ``{enabled: false}`` (the form a
    pipeline parameter can hold): retrieval well above chance and no empty or degenerate generated captions
    (``avlops.evaluation.caption_quality``)."""

    enabled: bool = Field(True, description="false turns the default checks off, like defaults: null")

    r1_over_chance: float = Field(
        3.0,
        ge=1.0,
        description="every text->clip task's R@1 must reach this many times chance (100 % / gallery size), "
        "capped halfway between chance and 100 %",
    )
    max_empty: float = Field(0.0, ge=0, le=100, description="% of a group's generated captions that may be empty")
    max_degenerate: float = Field(
        0.0, ge=0, le=100, description="% of a group's captions that may be degenerate (empty, repetitive, < 3 words)"
    )


class BlessingConfig(StrictModel):
    """When a model is blessed (TFX Evaluator style): checks relative to chance, absolute thresholds, and no
    regression against the champion. No check at all means not blessed (fail closed)."""

    defaults: DefaultChecks | None = Field(
        default_factory=DefaultChecks,
        description="the shipped checks relative to chance; null (or {enabled: false}) turns them off",
    )
    unsafe_bless_without_checks: bool = Field(
        False,
        description="bless a model on which no check ran (no defaults, thresholds or champion): UNSAFE, for "
        "experiments only; --unsafe-bless-without-checks",
    )

    thresholds: dict[str, Bound] = Field(
        default_factory=dict, description="metric name -> {min, max}, e.g. retrieval/t2av/R@1: {min: 20}"
    )
    champion: str | None = Field(None, description="the current champion's metrics.json; None = no champion yet")
    max_regression: dict[str, float] = Field(
        default_factory=dict,
        description="metric name -> how much worse than the champion it may be, in the metric's own units "
        "(points of R@K or CIDEr, ranks for MedR/MeanR); 0 = no worse at all",
    )
    missing: Literal["fail", "skip"] = Field(
        "fail", description="a check whose metric was not computed (e.g. no audio in the data): fail it or skip it"
    )

    @field_validator("thresholds", "max_regression")
    @classmethod
    def _names(cls, v: dict[str, object]) -> dict[str, object]:
        _check_metric_names(list(v))
        return v

    @field_validator("max_regression")
    @classmethod
    def _tolerances(cls, v: dict[str, float]) -> dict[str, float]:
        negative = [k for k, x in v.items() if x < 0]
        if negative:
            raise ValueError(f"tolerances must be >= 0: {', '.join(negative)}")
        return v


class EvaluateConfig(StrictModel):
    """What ``avlops evaluate`` runs on which split, how captions are generated, and the gate."""

    checkpoint: str | None = Field(None, description="checkpoint folder (…/checkpoints/step-N) or a training run")
    data: str = Field("data/preprocessed", description="`avlops preprocess` output folder")
    manifest: str | None = Field(None, description="manifest with the reference captions; None = the one in index.json")
    out: str = "reports/evaluate"
    split: Split = Split.TEST
    quarantine: list[str] = Field(
        default_factory=list,
        description="quarantine.jsonl files (`avlops data validate`, `data check`) whose clips are not evaluated on",
    )

    retrieval: tuple[Modality, ...] = Field(ALL_GROUPS, description="groups to retrieve: v, a, av")
    backward: bool = Field(True, description="also clip->text retrieval (v2t, a2t, av2t)")
    dual_softmax: bool = Field(True, description="also report ranks after dual-softmax re-ranking (retrieval-dsl/…)")
    captioning: tuple[Modality, ...] = Field(ALL_GROUPS, description="groups to caption from: v, a, av")
    beam_size: int = Field(3, ge=1, le=16, description="beam search width (papers: 3); 1 = greedy")
    max_caption_len: int | None = Field(
        None, ge=2, description="tokens per generated caption incl. SOT/EOT; None = min(30, the decoder's context)"
    )
    length_penalty: float = Field(0.6, ge=0, description="beam ranking: log p / ((5 + length) / 6)^length_penalty")
    min_caption_len: int = Field(0, ge=0, description="tokens a generated caption has at least (EOT banned before)")
    no_repeat_ngram: int = Field(
        3, ge=0, description="no n-gram of tokens twice and no token twice in a row in a generated caption; 0 = off"
    )
    truncate_captions: bool = Field(
        False,
        description="captions longer than the model's context are cut as training cuts them; False = refuse them",
    )

    batch_size: int = Field(32, ge=1, description="clips per encoder / decoder batch")
    query_batch: int = Field(256, ge=1, description="queries per block of the score matrix")
    gallery_batch: int = Field(1024, ge=1, description="gallery items per tile of the score matrix")
    cache_mb: int = Field(1024, ge=0, description="score-matrix rows kept for the second pass; more are recomputed")
    device: str = Field("auto", description="auto (cuda when available), cpu or cuda[:N]")

    examples: int = Field(4, ge=0, le=50, description="example queries and captions shown in the report")
    baseline: str | None = Field(None, description="a baseline model's metrics.json to compare against in the report")
    bless: BlessingConfig = Field(default_factory=BlessingConfig)

    @field_validator("retrieval", "captioning")
    @classmethod
    def _unique(cls, v: tuple[Modality, ...]) -> tuple[Modality, ...]:
        return tuple(dict.fromkeys(v))

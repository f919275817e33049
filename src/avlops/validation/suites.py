"""Expectation suites, derived from the dataset contract (:mod:`avlops.data.schema`) and the ``validation`` config.

Allowed splits and audio types, the clip-id pattern and the caption limit are read from the contract, never retyped.
Each expectation says why it matters (``notes``, shown in Data Docs and used as the quarantine reason) and how bad a
failure is (``severity``): ``critical`` expectations are dataset-level and fail the gate on their own (leakage across
splits, missing columns); ``warning`` expectations fail single rows, which are quarantined and counted against
``max_bad_fraction``. ``meta["detail"]`` names a column holding a per-row explanation for the quarantine.
"""

from __future__ import annotations

from typing import Any

import great_expectations as gx

# from the defining modules: great_expectations.expectations re-exports them implicitly, which strict mypy refuses
from great_expectations.expectations.core.expect_column_values_to_be_between import ExpectColumnValuesToBeBetween
from great_expectations.expectations.core.expect_column_values_to_be_in_set import ExpectColumnValuesToBeInSet
from great_expectations.expectations.core.expect_column_values_to_be_unique import ExpectColumnValuesToBeUnique
from great_expectations.expectations.core.expect_column_values_to_match_regex import ExpectColumnValuesToMatchRegex
from great_expectations.expectations.core.expect_column_values_to_not_be_null import ExpectColumnValuesToNotBeNull
from great_expectations.expectations.core.expect_table_columns_to_match_set import ExpectTableColumnsToMatchSet
from great_expectations.expectations.core.expect_table_row_count_to_be_between import ExpectTableRowCountToBeBetween
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.expectations.row_conditions import Column

from avlops.data.schema import CLIP_ID_PATTERN, MAX_CAPTION_CHARS, AudioType, Split
from avlops.data.stats import STATS_COLUMNS
from avlops.validation.frames import SOUNDED_AUDIO_TYPES
from avlops.validation.params import ValidateConfig

__all__ = ["DATASET", "ROW", "manifest_suite", "stats_suite"]

ROW = FailureSeverity.WARNING
DATASET = FailureSeverity.CRITICAL
SPLITS = [s.value for s in Split]
AUDIO_TYPES = [a.value for a in AudioType]


def _x(
    kind: type[Expectation], reason: str, *, level: FailureSeverity = ROW, detail: str | None = None, **kw: Any
) -> Expectation:
    return kind(notes=reason, severity=level, meta={"detail": detail} if detail else None, **kw)


def _common_rows() -> list[Expectation]:
    """Row checks both tables share: the id, the enums, the captions."""
    return [
        _x(ExpectColumnValuesToNotBeNull, "clip_id missing", column="clip_id"),
        _x(ExpectColumnValuesToBeUnique, "duplicate clip_id", column="clip_id"),
        _x(ExpectColumnValuesToBeInSet, "unknown split", column="split", value_set=SPLITS),
        _x(ExpectColumnValuesToBeInSet, "unknown audio_type", column="audio_type", value_set=AUDIO_TYPES),
        _x(ExpectColumnValuesToBeBetween, "no captions", column="caption_count", min_value=1),
        _x(
            ExpectColumnValuesToBeBetween,
            f"caption longer than {MAX_CAPTION_CHARS} characters",
            column="caption_chars_max",
            max_value=MAX_CAPTION_CHARS,
        ),
    ]


def manifest_suite(cfg: ValidateConfig) -> gx.ExpectationSuite:
    """Checks of the raw manifest table (:func:`avlops.validation.frames.manifest_frame`)."""
    return gx.ExpectationSuite(
        name="manifest",
        expectations=[
            _x(ExpectTableRowCountToBeBetween, "the manifest has no records", level=DATASET, min_value=1),
            *_common_rows(),
            _x(ExpectColumnValuesToMatchRegex, "malformed clip_id", column="clip_id", regex=CLIP_ID_PATTERN.pattern),
            _x(ExpectColumnValuesToNotBeNull, "source missing or empty", column="source"),
            _x(ExpectColumnValuesToBeBetween, "an empty caption", column="caption_chars_min", min_value=1),
            _x(ExpectColumnValuesToBeInSet, "neither video nor audio given", column="has_media", value_set=[True]),
            _x(
                ExpectColumnValuesToBeInSet,
                "breaks the ClipRecord contract",
                column="conforms",
                value_set=[True],
                detail="schema_errors",
            ),
            _x(
                ExpectColumnValuesToBeInSet,
                "clip id in two splits",
                level=DATASET,
                column="split_conflict",
                value_set=[False],
                detail="split_detail",
            ),
            _x(
                ExpectColumnValuesToBeInSet,
                "caption shared between train and " + "/".join(s.value for s in cfg.leak_splits),
                level=DATASET,
                column="caption_leak",
                value_set=[False],
                detail="leak_detail",
            ),
        ],
    )


def stats_suite(cfg: ValidateConfig) -> gx.ExpectationSuite:
    """Checks of the preprocessing statistics (:func:`avlops.validation.frames.stats_frame`)."""
    expectations = [
        _x(
            ExpectTableColumnsToMatchSet,
            "the statistics table lacks columns of the contract",
            level=DATASET,
            column_set=list(STATS_COLUMNS),
            exact_match=False,
        ),
        _x(ExpectTableRowCountToBeBetween, "the statistics table is empty", level=DATASET, min_value=1),
        *_common_rows(),
        _x(ExpectColumnValuesToBeInSet, "clip not in the manifest", column="in_manifest", value_set=[True]),
        _x(
            ExpectColumnValuesToBeBetween,
            "duration out of range",
            column="duration_s",
            min_value=cfg.min_duration_s,
            max_value=cfg.max_duration_s,
            row_condition=Column("is_still") == False,  # noqa: E712 - a still image without sound has no duration
        ),
        *_video_expectations(cfg),
        *_audio_expectations(cfg),
    ]
    return gx.ExpectationSuite(name="stats", expectations=expectations)


def _video_expectations(cfg: ValidateConfig) -> list[Expectation]:
    """Frame count, rate and size of the clips that have video."""
    video = Column("has_video") == True  # noqa: E712 - builds a GX condition, not a Python comparison
    return [
        _x(
            ExpectColumnValuesToBeBetween,
            "too few frames",
            column="frame_count",
            min_value=cfg.min_frames,
            row_condition=video,
        ),
        _x(
            ExpectColumnValuesToBeBetween,
            "frame rate out of range",
            column="fps",
            min_value=0,
            max_value=cfg.max_fps,
            row_condition=video,
        ),
        _x(
            ExpectColumnValuesToBeBetween,
            "frame too narrow",
            column="width",
            min_value=cfg.min_width,
            row_condition=video,
        ),
        _x(
            ExpectColumnValuesToBeBetween,
            "frame too low",
            column="height",
            min_value=cfg.min_height,
            row_condition=video,
        ),
    ]


def _audio_expectations(cfg: ValidateConfig) -> list[Expectation]:
    """A sound track where the audio type promises one, its loudness, sample rate and channels."""
    sounded = Column("audio_type").is_in(SOUNDED_AUDIO_TYPES)
    audio = Column("has_audio") == True  # noqa: E712 - builds a GX condition, not a Python comparison
    expectations = [
        _x(
            ExpectColumnValuesToBeInSet,
            "audio_type promises sound but there is no audio track",
            column="has_audio",
            value_set=[True],
            row_condition=sounded,
        ),
        _x(
            ExpectColumnValuesToBeBetween,
            f"silent audio (below {cfg.min_loudness_dbfs} dBFS) on a clip labelled with sound",
            column="loudness_dbfs",
            min_value=cfg.min_loudness_dbfs,
            row_condition=sounded,
        ),
        _x(
            ExpectColumnValuesToBeBetween,
            "sample rate out of range",
            column="sample_rate",
            min_value=cfg.min_sample_rate,
            max_value=cfg.max_sample_rate,
            row_condition=audio,
        ),
        _x(
            ExpectColumnValuesToBeBetween,
            "channel count out of range",
            column="channels",
            min_value=1,
            max_value=cfg.max_channels,
            row_condition=audio,
        ),
    ]
    if cfg.allowed_sample_rates:
        expectations.append(
            _x(
                ExpectColumnValuesToBeInSet,
                "sample rate not allowed",
                column="sample_rate",
                value_set=list(cfg.allowed_sample_rates),
                row_condition=audio,
            )
        )
    return expectations

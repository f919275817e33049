"""The per-clip statistics schema: everything derived from ``ClipStats``, and its readers use that one definition."""

from __future__ import annotations

import dataclasses

from avlops.data.stats import NULLABLE_COLUMNS, STATS_COLUMNS, STATS_DTYPES, STATS_FILE_COLUMNS, ClipStats
from avlops.features.tables import METADATA_FEATURES, STATS_FEATURES


def test_columns_follow_the_dataclass() -> None:
    assert list(STATS_COLUMNS) == [f.name for f in dataclasses.fields(ClipStats)]
    assert (*STATS_COLUMNS, "shard") == STATS_FILE_COLUMNS
    assert {"fps", "sample_rate", "channels", "width", "height"} == NULLABLE_COLUMNS
    assert STATS_COLUMNS["notes"] == "str" and STATS_COLUMNS["has_audio"] == "bool"


def test_pandas_dtypes_are_nullable_exactly_where_a_fact_can_be_missing() -> None:
    assert STATS_DTYPES == {
        "duration_s": "float64",
        "frame_count": "int64",
        "fps": "Float64",
        "sample_rate": "Int64",
        "channels": "Int64",
        "has_audio": "bool",
        "has_video": "bool",
        "loudness_dbfs": "float64",
        "caption_count": "int64",
        "caption_chars_max": "int64",
        "width": "Int64",
        "height": "Int64",
    }


def test_feature_views_publish_every_statistic_the_manifest_lacks() -> None:
    assert set(STATS_FEATURES) == set(STATS_COLUMNS) - set(METADATA_FEATURES) - {"clip_id"}

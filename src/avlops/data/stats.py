"""The per-clip statistics schema: one row of ``stats.parquet`` per preprocessed clip, defined once.

``avlops preprocess`` fills a :class:`ClipStats` per clip; the validation suite checks its columns and the feature
views publish them. Everything else here is derived from the dataclass, so adding a statistic is one line. No torch
and no pandas import: the readers that must stay light (validation, features) use it too.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "NULLABLE_COLUMNS",
    "SHARD_COLUMN",
    "STATS_COLUMNS",
    "STATS_DTYPES",
    "STATS_FILE_COLUMNS",
    "STATS_NAME",
    "ClipStats",
    "ColumnKind",
]

STATS_NAME = "stats.parquet"

ColumnKind = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True)
class ClipStats:
    """One row of ``stats.parquet`` (validation suites and feature views read these names)."""

    clip_id: str
    split: str
    source: str
    audio_type: str
    duration_s: float  # the video's duration; audio's for an audio-only clip or a still with sound; 0 for a bare still
    frame_count: int  # frames decoded from the video (1 for a still, 0 without video)
    fps: float | None
    sample_rate: int | None  # native rate of the sound used, None without sound
    channels: int | None  # native channel count
    has_audio: bool
    has_video: bool
    loudness_dbfs: float  # RMS of the native waveform in dBFS, FLOOR_DBFS (-120) without sound
    caption_count: int
    caption_chars_max: int
    width: int | None  # native frame size
    height: int | None
    notes: str  # '; '-separated conversions applied (resampling, downmixing, truncated captions); '' if none


def _kinds() -> tuple[dict[str, ColumnKind], frozenset[str]]:
    kinds: dict[str, ColumnKind] = {}
    nullable: set[str] = set()
    names: dict[type, ColumnKind] = {str: "str", int: "int", float: "float", bool: "bool"}
    for name, tp in typing.get_type_hints(ClipStats).items():
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = (a for a in typing.get_args(tp) if a is not type(None))
            nullable.add(name)
        kinds[name] = names[tp]
    return kinds, frozenset(nullable)


#: Column -> kind of every statistic (the per-clip table the validation suite and the feature views read).
STATS_COLUMNS, NULLABLE_COLUMNS = _kinds()
#: The bookkeeping column the preprocessing run adds: the shard file holding the clip.
SHARD_COLUMN = "shard"
#: The columns of ``stats.parquet``, in order.
STATS_FILE_COLUMNS: tuple[str, ...] = (*STATS_COLUMNS, SHARD_COLUMN)

_PANDAS: dict[ColumnKind, tuple[str, str]] = {  # kind -> (dtype, nullable dtype)
    "int": ("int64", "Int64"),
    "float": ("float64", "Float64"),
    "bool": ("bool", "boolean"),
}
#: pandas dtypes of the non-text ``stats.parquet`` columns (nullable where a fact can be missing).
STATS_DTYPES: dict[str, str] = {
    k: _PANDAS[kind][k in NULLABLE_COLUMNS] for k, kind in STATS_COLUMNS.items() if kind in _PANDAS
}

"""The offline feature tables, built with pandas from a manifest and ``stats.parquet``.

Each materialization writes one parquet part per table, named after its event timestamp, into the table's folder:
the folder keeps the history that point-in-time joins need, and re-running with the same (fixed) timestamp replaces
its own part instead of duplicating rows. No Feast import here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from avlops.data.schema import ClipRecord
from avlops.data.stats import STATS_COLUMNS, ColumnKind

__all__ = [
    "EVENT_TIMESTAMP",
    "JOIN_KEY",
    "METADATA_FEATURES",
    "STATS_FEATURES",
    "entity_frame",
    "metadata_table",
    "stats_table",
    "to_utc",
    "write_part",
]

JOIN_KEY = "clip_id"
EVENT_TIMESTAMP = "event_timestamp"

#: Facts from the manifest (the dataset contract), per clip.
METADATA_FEATURES: dict[str, ColumnKind] = {
    "split": "str",
    "audio_type": "str",
    "source": "str",
    "caption_count": "int",
}
#: Facts measured by preprocessing: every column of ``stats.parquet`` the manifest does not already give.
STATS_FEATURES: dict[str, ColumnKind] = {
    k: v for k, v in STATS_COLUMNS.items() if k != JOIN_KEY and k not in METADATA_FEATURES
}
# nullable pandas dtypes: a value preprocessing could not measure stays missing instead of failing the cast
_DTYPES: dict[ColumnKind, str] = {"str": "string", "int": "Int64", "float": "float64", "bool": "boolean"}


def to_utc(ts: datetime | pd.Timestamp | str | None) -> pd.Timestamp:
    """A timezone-aware UTC timestamp (naive values are taken as UTC; None is now)."""
    t = pd.Timestamp(datetime.now(UTC) if ts is None else ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _typed(df: pd.DataFrame, features: dict[str, ColumnKind], at: pd.Timestamp) -> pd.DataFrame:
    out = df[[JOIN_KEY, *features]].astype({JOIN_KEY: "string", **{k: _DTYPES[v] for k, v in features.items()}})
    out[EVENT_TIMESTAMP] = at
    return out.drop_duplicates(JOIN_KEY, keep="last").reset_index(drop=True)


def metadata_table(records: Iterable[ClipRecord], at: datetime | pd.Timestamp) -> pd.DataFrame:
    """One row per clip: split, audio type, source and caption count, stamped ``at``."""
    rows = [
        {
            JOIN_KEY: r.clip_id,
            "split": r.split.value,
            "audio_type": r.audio_type.value,
            "source": r.source,
            "caption_count": len(r.captions),
        }
        for r in records
    ]
    return _typed(pd.DataFrame(rows, columns=[JOIN_KEY, *METADATA_FEATURES]), METADATA_FEATURES, to_utc(at))


def stats_table(stats: pd.DataFrame, at: datetime | pd.Timestamp) -> pd.DataFrame:
    """The measured columns of ``stats.parquet``, stamped ``at``; a missing contract column is an error."""
    missing = [c for c in (JOIN_KEY, *STATS_FEATURES) if c not in stats.columns]
    if missing:
        raise ValueError(f"statistics table lacks columns {missing}")
    return _typed(stats, STATS_FEATURES, to_utc(at))


def _stamp(at: pd.Timestamp) -> str:
    return str(at.strftime("%Y%m%dT%H%M%S%fZ"))


def write_part(df: pd.DataFrame, folder: str, at: datetime | pd.Timestamp) -> str:
    """Write ``df`` as ``<folder>/<timestamp>.parquet`` (local folder or fsspec URL); return its location.

    Locally the part is written under a dot-name and renamed, so a reader never sees half a file (parquet dataset
    readers skip dot-files).
    """
    name = f"{_stamp(to_utc(at))}.parquet"
    if "://" in folder:
        uri = f"{folder.rstrip('/')}/{name}"
        df.to_parquet(uri, index=False)
        return uri
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return str(path)


def entity_frame(
    clip_ids: Sequence[str], at: datetime | pd.Timestamp | Sequence[datetime | pd.Timestamp]
) -> pd.DataFrame:
    """An entity DataFrame for point-in-time lookups: the clips, each at ``at`` (one time, or one per clip)."""
    times = [at] * len(clip_ids) if isinstance(at, datetime | pd.Timestamp) else list(at)
    if len(times) != len(clip_ids):
        raise ValueError(f"{len(clip_ids)} clip ids but {len(times)} timestamps")
    return pd.DataFrame({JOIN_KEY: list(clip_ids), EVENT_TIMESTAMP: [to_utc(t) for t in times]})

"""The tables the validation suites check, built with pandas from a manifest and from ``stats.parquet``.

Great Expectations checks one row per clip with scalar columns. Everything that needs more than one row or a list
(captions shared across splits, an id in two splits, caption lengths) is derived here into a per-row column that a
plain expectation can check. No Great Expectations import: these functions are tested on their own.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from avlops.data.manifest import Problem, iter_jsonl
from avlops.data.schema import AudioType, RecordError, Split, parse_record

__all__ = [
    "SOUNDED_AUDIO_TYPES",
    "manifest_frame",
    "normalize_caption",
    "stats_frame",
]

#: Audio types that promise a sound track: everything the contract defines except "unknown".
SOUNDED_AUDIO_TYPES: tuple[str, ...] = tuple(a.value for a in AudioType if a is not AudioType.UNKNOWN)


def normalize_caption(text: str) -> str:
    """Caption text as the contract stores it (whitespace collapsed), case-folded for comparisons."""
    return " ".join(text.split()).casefold()


def _row(line: int, obj: dict[str, Any]) -> dict[str, Any]:
    clip_id = obj.get("clip_id")
    source = obj.get("source")
    raw_caps = obj.get("captions")
    caps = [" ".join(c.split()) if isinstance(c, str) else "" for c in raw_caps] if isinstance(raw_caps, list) else []
    lengths = [len(c) for c in caps]
    try:
        parse_record(obj)
        errors = ""
    except RecordError as err:
        errors = "; ".join(err.reasons)
    return {
        "line": line,
        "clip_id": clip_id if isinstance(clip_id, str) else None,
        "split": str(obj["split"]) if obj.get("split") is not None else None,
        # the contract's default when the field is absent
        "audio_type": str(obj.get("audio_type", AudioType.UNKNOWN.value)),
        "source": source if isinstance(source, str) and source.strip() else None,
        "caption_count": len(caps),
        "caption_chars_min": min(lengths) if lengths else None,
        "caption_chars_max": max(lengths) if lengths else None,
        "has_video": isinstance(obj.get("video"), str) and bool(obj["video"]),
        "has_audio_file": isinstance(obj.get("audio"), str) and bool(obj["audio"]),
        "schema_errors": errors,
        "_captions": [normalize_caption(c) for c in caps if c],
    }


def _split_conflicts(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: is its clip id also listed under another split, and which."""
    splits: dict[str, set[str]] = defaultdict(set)
    for cid, split in zip(df["clip_id"], df["split"], strict=True):
        if cid is not None and split is not None:
            splits[cid].add(split)
    flags, details = [], []
    for cid, split in zip(df["clip_id"], df["split"], strict=True):
        others = sorted(splits.get(cid, set()) - {split}) if cid is not None else []
        flags.append(bool(others))
        details.append(f"clip id also in split {', '.join(others)}" if others else "")
    return pd.Series(flags, index=df.index), pd.Series(details, index=df.index)


def _caption_leaks(df: pd.DataFrame, leak_splits: tuple[str, ...]) -> tuple[pd.Series, pd.Series]:
    """Per row: does one of its captions also occur in the other side (train vs ``leak_splits``), and where."""
    train, evals = Split.TRAIN.value, set(leak_splits)
    first_seen: dict[tuple[bool, str], tuple[str, str]] = {}  # (is_train, caption) -> (split, clip_id)
    for cid, split, caps in zip(df["clip_id"], df["split"], df["_captions"], strict=True):
        if split == train or split in evals:
            for c in caps:
                first_seen.setdefault((split == train, c), (split, cid or "?"))
    flags, details = [], []
    for split, caps in zip(df["split"], df["_captions"], strict=True):
        hit = None
        if split == train or split in evals:
            hit = next(((c, first_seen[(split != train, c)]) for c in caps if (split != train, c) in first_seen), None)
        flags.append(hit is not None)
        details.append(f"caption {hit[0]!r} also in {hit[1][0]} clip {hit[1][1]}" if hit else "")
    return pd.Series(flags, index=df.index), pd.Series(details, index=df.index)


def manifest_frame(
    path: Path, leak_splits: tuple[str, ...] = (Split.TEST.value,)
) -> tuple[pd.DataFrame, list[Problem]]:
    """One row per readable manifest line, from the raw JSON (not the parsed records: the suite must see the breakage).

    Lines that are not JSON objects cannot become rows; they come back as problems.
    Derived columns: ``caption_count``, ``caption_chars_min/max``, ``has_media``, ``conforms`` (the record parses
    as a :class:`~avlops.data.schema.ClipRecord`; ``schema_errors`` says why not), ``split_conflict`` and
    ``caption_leak`` (with ``*_detail`` text naming the other clip).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for n, obj, error in iter_jsonl(path):
        if error is not None or not isinstance(obj, dict):
            problems.append(
                Problem(str(path), n, None, (error or f"expected a JSON object, got {type(obj).__name__}",))
            )
        else:
            rows.append(_row(n, obj))
    df = pd.DataFrame(rows, columns=list(_row(0, {})))  # the column names, also for an empty manifest
    df["has_media"] = df["has_video"] | df["has_audio_file"]
    df["conforms"] = df["schema_errors"] == ""
    df["split_conflict"], df["split_detail"] = _split_conflicts(df)
    df["caption_leak"], df["leak_detail"] = _caption_leaks(df, leak_splits)
    return df.drop(columns="_captions").astype(
        {"caption_chars_min": "float64", "caption_chars_max": "float64"}
    ), problems


def stats_frame(stats: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """``stats.parquet`` plus ``row`` (its 1-based number), ``in_manifest`` and ``is_still``.

    ``has_video`` comes from the manifest when the table lacks it (a clip the manifest does not know counts as having
    one, so its frame checks still apply). ``is_still`` marks a still image without sound: it has no duration.
    """
    df = stats.reset_index(drop=True).copy()
    df["row"] = range(1, len(df) + 1)
    known = manifest.dropna(subset=["clip_id"]).drop_duplicates("clip_id").set_index("clip_id")["has_video"]
    ids = df["clip_id"] if "clip_id" in df else pd.Series([None] * len(df), dtype=object)
    df["in_manifest"] = ids.isin(known.index)
    if "has_video" not in df:
        df["has_video"] = [bool(known.get(c, True)) for c in ids]
    frames = pd.to_numeric(df["frame_count"], errors="coerce") if "frame_count" in df else pd.Series(float("nan"))
    sound = df["has_audio"].fillna(False).astype(bool) if "has_audio" in df else False
    df["is_still"] = df["has_video"].fillna(True).astype(bool) & (frames == 1) & ~sound
    return df

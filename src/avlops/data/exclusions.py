"""Clips a later stage must not use: the ``quarantine.jsonl`` files that ``avlops data check`` and
``avlops data validate`` write (one JSON object per bad clip: ``source``, ``line``, ``clip_id``, ``reasons``).

Training and evaluation read the preprocessed shards, which still hold every clip that decoded; a clip quarantined
by validation afterwards (silent audio where the manifest claims sound, a caption leaked across splits) is dropped
there by id, and the stage says how many it dropped and why (:func:`describe_dropped`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["ExclusionError", "describe_dropped", "read_exclusions"]


class ExclusionError(ValueError):
    """A quarantine file that is missing or unreadable (named, with the line)."""


def read_exclusions(paths: Iterable[str | Path]) -> dict[str, str]:
    """clip_id -> the reasons it was quarantined, from every file in ``paths`` (entries without a clip_id, such as an
    unparsable manifest line, name no clip and are skipped)."""
    out: dict[str, str] = {}
    for p in map(Path, paths):
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ExclusionError(
                f"{p}: quarantine file not found (run `avlops data validate` first, or drop it from the config)"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ExclusionError(f"{p}: unreadable quarantine file: {err}") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ExclusionError(f"{p}:{n}: not a JSON quarantine entry: {err}") from None
            clip = row.get("clip_id") if isinstance(row, dict) else None
            if isinstance(clip, str) and clip:
                reasons = "; ".join(str(r) for r in row.get("reasons") or ["quarantined"])
                out[clip] = f"{out[clip]}; {reasons}" if clip in out else reasons
    return out


def describe_dropped(dropped: Mapping[str, str], where: str, limit: int = 5) -> str:
    """``"dropped 3 quarantined clip(s) from split 'train': 2 x <reason>; 1 x <reason>"``."""
    counts = Counter(dropped.values())
    parts = [f"{n} x {reason}" for reason, n in counts.most_common(limit)]
    more = f"; and {len(counts) - limit} other reason(s)" if len(counts) > limit else ""
    return f"dropped {len(dropped)} quarantined clip(s) from {where}: " + "; ".join(parts) + more

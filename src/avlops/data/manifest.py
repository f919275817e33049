"""Reading, checking and writing manifests; quarantining bad records with their reasons.

A check never drops a record silently: every record is either kept or listed in the quarantine with its source
file, line and reasons. The caller decides whether the bad fraction is acceptable (:meth:`CheckReport.passed`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from avlops.data.media import MediaError, probe
from avlops.data.schema import AudioType, ClipRecord, MediaPathError, RecordError, parse_record, resolve_media
from avlops.fileio import write_atomic

__all__ = [
    "CheckReport",
    "LocatedRecord",
    "Problem",
    "check_manifest",
    "check_records",
    "read_manifest",
    "write_jsonl_atomic",
    "write_manifest",
    "write_quarantine",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass(frozen=True)
class Problem:
    """A record that was not kept: where it came from and every reason."""

    source: str
    line: int | None
    clip_id: str | None
    reasons: tuple[str, ...]

    def format(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        who = f" [{self.clip_id}]" if self.clip_id else ""
        return f"{where}{who}: " + "; ".join(self.reasons)

    def to_json_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "clip_id": self.clip_id, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class LocatedRecord:
    """A record that satisfies the schema, with where it was read from."""

    record: ClipRecord
    source: str
    line: int | None


@dataclass
class CheckReport:
    source: str
    kept: list[LocatedRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.kept) + len(self.problems)

    @property
    def bad_fraction(self) -> float:
        return len(self.problems) / self.total if self.total else 0.0

    def passed(self, max_bad_fraction: float) -> bool:
        return self.total > 0 and self.bad_fraction <= max_bad_fraction

    @property
    def records(self) -> list[ClipRecord]:
        return [k.record for k in self.kept]

    def summary(self) -> dict[str, Any]:
        kept = self.records

        def by(attr: str) -> dict[str, int]:
            return dict(sorted(Counter(str(getattr(r, attr)) for r in kept).items()))

        return {
            "source": self.source,
            "records": self.total,
            "kept": len(kept),
            "quarantined": len(self.problems),
            "bad_fraction": round(self.bad_fraction, 6),
            "captions": sum(len(r.captions) for r in kept),
            "by_split": by("split"),
            "by_audio_type": by("audio_type"),
            "with_video": sum(1 for r in kept if r.video),
            "with_separate_audio": sum(1 for r in kept if r.audio),
        }


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any | None, str | None]]:
    """Yield ``(line_number, object, error)`` for each non-blank line; bad bytes or JSON give an error, not a raise."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield n, None, f"not valid UTF-8 ({err.reason} at byte {err.start})"
                continue
            try:
                yield n, json.loads(text), None
            except json.JSONDecodeError as err:
                yield n, None, f"not valid JSON: {err.msg} at column {err.colno}"


def read_manifest(path: Path) -> tuple[list[LocatedRecord], list[Problem]]:
    """Parse a manifest against the schema; lines that break it become problems, the rest are kept."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    kept: list[LocatedRecord] = []
    problems: list[Problem] = []
    for n, obj, error in iter_jsonl(path):
        clip_id = obj.get("clip_id") if isinstance(obj, dict) and isinstance(obj.get("clip_id"), str) else None
        if error is not None:
            problems.append(Problem(str(path), n, None, (error,)))
            continue
        try:
            kept.append(LocatedRecord(parse_record(obj), str(path), n))
        except RecordError as err:
            problems.append(Problem(str(path), n, clip_id, tuple(err.reasons)))
    return kept, problems


def _media_reasons(rec: ClipRecord, root: Path, decode: bool) -> list[str]:
    reasons: list[str] = []
    video_has_audio = False
    for kind in ("video", "audio"):
        rel = getattr(rec, kind)
        if rel is None:
            continue
        try:
            path = resolve_media(root, rel)
        except MediaPathError as err:
            reasons.append(f"{kind}: {err}")
            continue
        try:
            info = probe(path, decode=decode)
        except MediaError as err:
            reasons.append(f"{kind}: {err}")
            continue
        if kind == "video":
            if not info.has_video:
                reasons.append(f"video: {rel} has no video stream")
            video_has_audio = info.has_audio
        elif not info.has_audio:
            reasons.append(f"audio: {rel} has no audio stream")
    if not reasons and rec.audio is None and not video_has_audio and rec.audio_type is not AudioType.UNKNOWN:
        reasons.append(f"audio_type is {rec.audio_type.value!r} but the video has no audio track and no audio is given")
    return reasons


def check_records(
    entries: Sequence[LocatedRecord],
    root: Path,
    *,
    source: str,
    prior_problems: Iterable[Problem] = (),
    check_media: bool = True,
    decode: bool = True,
    workers: int = 4,
    progress: bool = True,
) -> CheckReport:
    """Check schema-valid records against the files under ``root``: unique ids, paths inside the root, media present
    and decodable. Returns every record as kept or quarantined."""
    report = CheckReport(source=source, problems=list(prior_problems))
    first_seen: dict[str, LocatedRecord] = {}
    unique: list[LocatedRecord] = []
    for e in entries:
        cid = e.record.clip_id
        if cid in first_seen:
            prev = first_seen[cid]
            if prev.line is None:
                where = prev.source
            else:  # name the file only when the duplicate comes from another one (importers read several)
                where = f"line {prev.line}" if prev.source == e.source else f"{prev.source}:{prev.line}"
            report.problems.append(Problem(e.source, e.line, cid, (f"duplicate clip_id (first seen on {where})",)))
        else:
            first_seen[cid] = e
            unique.append(e)
    if check_media:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(
                tqdm(
                    pool.map(lambda e: _media_reasons(e.record, root, decode), unique),
                    total=len(unique),
                    desc="checking media",
                    unit="clip",
                    disable=None if progress else True,
                )
            )
    else:
        results = [[] for _ in unique]
    for e, reasons in zip(unique, results, strict=True):
        if reasons:
            report.problems.append(Problem(e.source, e.line, e.record.clip_id, tuple(reasons)))
        else:
            report.kept.append(e)
    report.problems.sort(key=lambda p: (p.source, p.line or 0))
    return report


def check_manifest(path: Path, **kwargs: Any) -> CheckReport:
    """Read and check a manifest; media paths are relative to the manifest's folder."""
    kept, problems = read_manifest(path)
    return check_records(kept, path.parent, source=str(path), prior_problems=problems, **kwargs)


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write JSON Lines to ``path`` atomically (:func:`avlops.fileio.write_atomic`): readers never see half a file."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a manifest is as readable as any other file

    write_atomic(path, write)


def write_manifest(path: Path, records: Iterable[ClipRecord]) -> None:
    write_jsonl_atomic(path, (r.to_json_dict() for r in records))


def write_quarantine(path: Path, problems: Iterable[Problem]) -> None:
    write_jsonl_atomic(path, (p.to_json_dict() for p in problems))

"""What an importer produces, and how it becomes a checked manifest plus a quarantine in the dataset root.

Every importer builds plain dicts and hands them to :meth:`ImportResult.add`, which validates them with
:func:`avlops.data.schema.parse_record`: the schema stays the one source of truth. Entries that cannot become a
record are filed with :meth:`ImportResult.reject`, with the annotation file and line they came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from avlops.config import ConfigError
from avlops.data.manifest import CheckReport, LocatedRecord, Problem, check_records, write_manifest, write_quarantine
from avlops.data.schema import RecordError, parse_record

if TYPE_CHECKING:
    from avlops.data.importers.splits import SplitAssignment, SplitReport

__all__ = [
    "QUARANTINE_NAME",
    "ImportResult",
    "clip_id_from",
    "manifest_path",
    "media_folder",
    "save_import",
]

QUARANTINE_NAME = "quarantine.jsonl"
_NOT_ID = re.compile(r"[^A-Za-z0-9_.:\-]+")


@dataclass
class ImportResult:
    """Schema-valid records with where each came from, and every entry that could not be used."""

    entries: list[LocatedRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    _first: dict[str, str] = field(default_factory=dict, repr=False)  # clip_id -> "file:line" of its first record

    def add(
        self,
        fields: dict[str, Any],
        source: str,
        line: int | None,
        *,
        origin: str | None = None,
        note: str | None = None,
        caption_source: str | None = None,
    ) -> None:
        """Validate ``fields`` as a :class:`ClipRecord`; keep it, or reject it with every reason.

        ``origin`` is what the clip_id was derived from (a file name), quoted when two clips end up with one id;
        ``note`` is added to the reasons of a rejected record (e.g. which lines its captions came from);
        ``caption_source`` is the file the captions came from, blamed instead of ``source`` when only they are bad.
        """
        raw_id = fields.get("clip_id")
        clip_id = raw_id if isinstance(raw_id, str) else None
        try:
            record = parse_record(fields)
        except RecordError as err:
            only_captions = caption_source is not None and all(r.startswith("captions") for r in err.reasons)
            where_bad = caption_source if only_captions and caption_source is not None else source
            self.reject(where_bad, None if only_captions else line, clip_id, *err.reasons, *([note] if note else []))
            return
        where = source if line is None else f"{source}:{line}"
        if record.clip_id in self._first:
            came_from = f" (from {origin!r})" if origin else ""
            first = self._first[record.clip_id]
            self.reject(source, line, record.clip_id, f"clip_id{came_from} is already taken by {first}")
            return
        self._first[record.clip_id] = where
        self.entries.append(LocatedRecord(record, source, line))

    def reject(self, source: str, line: int | None, clip_id: str | None, *reasons: str) -> None:
        """File an entry that does not become a record."""
        self.problems.append(Problem(source, line, clip_id, tuple(reasons)))


def clip_id_from(stem: str) -> str:
    """A valid clip_id from a relative path without its suffix: ``/`` becomes ``__``, other characters outside
    ``[A-Za-z0-9_.:-]`` become ``_`` (``"birds/Rain 2"`` -> ``"birds__Rain_2"``). Distinct paths may collide."""
    cid = "__".join(_NOT_ID.sub("_", part) for part in PurePosixPath(stem).parts)
    if not cid or cid[0] in ".:":
        cid = "_" + cid
    return cid[:200]


def media_folder(root: Path, folder: str | Path) -> tuple[Path, str]:
    """The absolute media folder and its POSIX path relative to ``root`` (``"."`` for the root itself).

    ``folder`` is relative to ``root`` (or absolute) and must lie inside it: manifest paths are relative to the root.
    """
    base = root.resolve()
    path = (root / folder).resolve()
    if not path.is_relative_to(base):
        raise ConfigError(f"media folder {folder}: must be inside the dataset root {root}")
    if not path.is_dir():
        raise FileNotFoundError(f"{root / folder}: media folder not found")
    return path, path.relative_to(base).as_posix()


def manifest_path(root: Path, name: str | Path = "manifest.jsonl") -> Path:
    """Where the manifest goes: directly in ``root``, since its media paths are relative to its folder."""
    path = root / name
    if path.resolve().parent != root.resolve():
        raise ConfigError(f"--manifest {name}: must be a file name directly in the dataset root {root}")
    if path.name == QUARANTINE_NAME or path.suffix != ".jsonl":
        raise ConfigError(f"--manifest {name}: must end in .jsonl and not be {QUARANTINE_NAME}")
    return path


def save_import(
    result: ImportResult,
    root: Path,
    manifest: Path,
    *,
    decode: bool = True,
    workers: int = 4,
    progress: bool = True,
    splits: SplitAssignment | None = None,
) -> tuple[CheckReport, SplitReport | None]:
    """Check the imported records against the media under ``root`` (present, decodable, inside the root, unique ids),
    assign the good ones their splits (``splits``: :func:`avlops.data.importers.splits.assign_splits`; None keeps
    the importer's), then write the kept ones to ``manifest`` and every problem to ``<root>/quarantine.jsonl``."""
    from avlops.data.importers.splits import assign_splits  # it builds on ImportResult

    report = check_records(
        result.entries,
        root,
        source=str(manifest),
        prior_problems=result.problems,
        decode=decode,
        workers=workers,
        progress=progress,
    )
    split_report = None
    if splits is not None:  # after the media check: a broken file takes no place in a split
        checked = ImportResult(entries=list(report.kept), problems=list(report.problems))
        split_report = assign_splits(checked, splits)
        report.kept, report.problems = checked.entries, checked.problems
    write_manifest(manifest, report.records)
    write_quarantine(root / QUARANTINE_NAME, report.problems)
    return report, split_report

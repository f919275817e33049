"""Assigning ``train`` / ``val`` / ``test`` to imported clips without leaking a caption or a media file across splits.

An importer reads every clip with a provisional split; :func:`assign_splits` then sets the final one by
:class:`SplitAssignment`:

* ``fixed`` — every clip gets one split (``--split train``);
* ``folders`` — the clip's media lies under a folder named after a split (``train/``, ``val/`` or ``validation/``,
  ``test/``), at any depth under the dataset root;
* ``file`` — a split file names each clip's split: JSON ``{"name": "test", ...}`` or text lines ``name,split``
  (or ``name split``), where ``name`` is a clip_id or a media path relative to the root, with or without suffix;
* ``ratio`` — groups of clips are shuffled with ``seed`` and dealt out to reach the ``train:val:test`` ratio.

**Groups**: clips that share a caption (compared case- and whitespace-insensitively) or a media file are one group,
and a group never spans two splits. In ``ratio`` mode groups are dealt whole. With ``folders`` or ``file`` the user
chose; a group that the choice would split is moved whole into its most held-out split (test before val before
train: no held-out caption is trained on) and every moved clip is reported. Clips with no split (outside every split
folder, missing from the split file) are rejected with the reason.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from avlops.data.importers.result import ImportResult
from avlops.data.manifest import LocatedRecord
from avlops.data.schema import ClipRecord, Split

__all__ = ["SPLIT_FOLDERS", "SplitAssignment", "SplitError", "SplitReport", "assign_splits", "read_split_file"]

#: folder names that mean a split (lower-cased)
SPLIT_FOLDERS = {
    "train": Split.TRAIN,
    "val": Split.VAL,
    "valid": Split.VAL,
    "validation": Split.VAL,
    "test": Split.TEST,
}
_HELD_OUT_FIRST = (Split.TEST, Split.VAL, Split.TRAIN)

Mode = Literal["fixed", "folders", "file", "ratio"]


class SplitError(ValueError):
    """A split option or split file that cannot be used (named, with the reason)."""


@dataclass(frozen=True)
class SplitAssignment:
    """How an importer assigns splits (see the module docstring)."""

    mode: Mode = "fixed"
    split: Split = Split.TRAIN  # fixed
    file: Path | None = None  # file
    ratio: tuple[float, float, float] = (0.8, 0.1, 0.1)  # ratio: train, val, test
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode == "file" and self.file is None:
            raise SplitError("split mode 'file' needs a split file")
        if self.mode == "ratio" and (any(r < 0 for r in self.ratio) or sum(self.ratio) <= 0):
            raise SplitError(f"split ratio {self.ratio}: three non-negative numbers train:val:test, not all 0")

    @classmethod
    def parse_ratio(cls, text: str, seed: int = 0) -> SplitAssignment:
        """``"0.8:0.1:0.1"`` (or ``8:1:1``, commas allowed) -> a ratio assignment."""
        parts = text.replace(",", ":").split(":")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise SplitError(f"--split-ratio {text!r}: expected train:val:test, e.g. 0.8:0.1:0.1") from None
        if len(values) != 3:
            raise SplitError(f"--split-ratio {text!r}: expected three numbers train:val:test, e.g. 0.8:0.1:0.1")
        return cls(mode="ratio", ratio=(values[0], values[1], values[2]), seed=seed)

    def describe(self) -> str:
        if self.mode == "fixed":
            return f"every clip in {self.split.value}"
        if self.mode == "folders":
            return "from split folders (train/, val/, test/)"
        if self.mode == "file":
            return f"from split file {self.file}"
        return f"by ratio {':'.join(f'{r:g}' for r in self.ratio)} with seed {self.seed}"


@dataclass
class SplitReport:
    """What :func:`assign_splits` did: clips per split, groups, moved and rejected clips."""

    assignment: SplitAssignment
    counts: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    moved: list[str] = field(default_factory=list)  # "clip_id: train -> test (shares caption '…' with test clip X)"

    def summary(self) -> str:
        counts = ", ".join(f"{s.value} {self.counts.get(s.value, 0)}" for s in Split)
        line = f"splits {self.assignment.describe()}: {counts} clips in {self.groups} group(s)"
        if self.moved:
            line += f"; {len(self.moved)} clip(s) moved so that no caption or media file is in two splits"
        return line


def normalise_caption(text: str) -> str:
    return " ".join(text.lower().split())


def _media_keys(record: ClipRecord) -> list[str]:
    return [f"media:{p}" for p in (record.video, record.audio) if p is not None]


def _groups(entries: list[LocatedRecord]) -> list[list[int]]:
    """Indices of ``entries`` joined by a shared normalised caption or media path (union-find)."""
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, e in enumerate(entries):
        keys = [f"caption:{normalise_caption(c)}" for c in e.record.captions] + _media_keys(e.record)
        for key in keys:
            if key in owner:
                parent[find(i)] = find(owner[key])
            else:
                owner[key] = i
    by_root: dict[int, list[int]] = {}
    for i in range(len(entries)):
        by_root.setdefault(find(i), []).append(i)
    return sorted(by_root.values(), key=lambda g: min(entries[i].record.clip_id for i in g))


def read_split_file(path: Path) -> dict[str, Split]:
    """A split file: JSON ``{name: split}`` or lines ``name,split`` / ``name split`` (``#`` comments, a
    ``name,split`` header allowed). Raises :class:`SplitError` naming the file, line and reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SplitError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SplitError(f"{path}: unreadable split file: {err}") from None

    def split_of(value: object, where: str) -> Split:
        name = str(value).strip().lower()
        if name not in SPLIT_FOLDERS:
            raise SplitError(f"{where}: unknown split {value!r} (train, val, test)")
        return SPLIT_FOLDERS[name]

    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise SplitError(f"{path}: invalid JSON: {err}") from None
        return {str(k): split_of(v, f"{path}: {k!r}") for k, v in data.items()}
    out: dict[str, Split] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in (line.rsplit(",", 1) if "," in line else line.rsplit(None, 1))]
        if len(parts) != 2 or not parts[0]:
            raise SplitError(f"{path}:{n}: expected 'name,split', got {raw!r}")
        if n == 1 and parts[1].lower() == "split":
            continue  # a header
        out[parts[0]] = split_of(parts[1], f"{path}:{n}")
    return out


def _folder_split(record: ClipRecord) -> Split | None:
    for p in (record.video, record.audio):
        if p is not None:
            for part in PurePosixPath(p).parent.parts:
                if part.lower() in SPLIT_FOLDERS:
                    return SPLIT_FOLDERS[part.lower()]
    return None


def _file_split(record: ClipRecord, table: dict[str, Split]) -> Split | None:
    names = [record.clip_id]
    for p in (record.video, record.audio):
        if p is not None:
            names += [p, str(PurePosixPath(p).with_suffix(""))]
    return next((table[n] for n in names if n in table), None)


def _deal(groups: list[list[int]], ratio: tuple[float, float, float], seed: int) -> list[Split]:
    """Shuffle ``groups`` with ``seed`` and give each, whole, to the split furthest below its share of clips."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    total = sum(len(g) for g in groups)
    share = [r / sum(ratio) for r in ratio]
    counts = [0, 0, 0]
    splits = list(Split)  # train, val, test
    out: list[Split] = [Split.TRAIN] * len(groups)
    for gi in order:
        # the split with the largest deficit of clips against its target; ties go to the held-out splits first
        deficits = [share[s] * total - counts[s] if share[s] > 0 else float("-inf") for s in range(3)]
        best = max((2, 1, 0), key=lambda s: deficits[s])
        out[gi] = splits[best]
        counts[best] += len(groups[gi])
    return out


def assign_splits(result: ImportResult, assignment: SplitAssignment) -> SplitReport:
    """Set every record's split in ``result`` by ``assignment``, keeping each caption/media group in one split."""
    report = SplitReport(assignment)
    entries = result.entries
    table = read_split_file(assignment.file) if assignment.mode == "file" and assignment.file is not None else {}
    chosen: list[Split | None]
    if assignment.mode == "fixed":
        chosen = [assignment.split] * len(entries)
    elif assignment.mode == "folders":
        chosen = [_folder_split(e.record) for e in entries]
    elif assignment.mode == "file":
        chosen = [_file_split(e.record, table) for e in entries]
    else:
        chosen = [None] * len(entries)

    keep: list[int] = []
    for i, (e, s) in enumerate(zip(entries, chosen, strict=True)):
        if s is not None or assignment.mode == "ratio":
            keep.append(i)
            continue
        why = (
            "not under a split folder (train/, val/ or validation/, test/)"
            if assignment.mode == "folders"
            else f"not named in the split file {assignment.file} (by clip_id or media path)"
        )
        result.reject(e.source, e.line, e.record.clip_id, why)
    entries = [entries[i] for i in keep]
    chosen = [chosen[i] for i in keep]
    groups = _groups(entries)
    report.groups = len(groups)

    final: list[Split] = [Split.TRAIN] * len(entries)
    if assignment.mode == "ratio":
        for g, split in zip(groups, _deal(groups, assignment.ratio, assignment.seed), strict=True):
            for i in g:
                final[i] = split
    else:
        for g in groups:
            asked = {chosen[i] for i in g}
            target = next(s for s in _HELD_OUT_FIRST if s in asked)
            anchor = next(i for i in g if chosen[i] is target)
            for i in g:
                final[i] = target
                if chosen[i] is not target:
                    src = chosen[i]
                    what = _shared(entries[i].record, entries[anchor].record)
                    report.moved.append(
                        f"{entries[i].record.clip_id}: {src.value if src else '?'} -> {target.value} "
                        f"(shares {what} with {target.value} clip {entries[anchor].record.clip_id}, "
                        "or through a chain of such clips)"
                    )
    result.entries = [
        LocatedRecord(e.record.model_copy(update={"split": s}), e.source, e.line)
        for e, s in zip(entries, final, strict=True)
    ]
    report.counts = dict(Counter(s.value for s in final))
    return report


def _shared(a: ClipRecord, b: ClipRecord) -> str:
    caps = {normalise_caption(c) for c in a.captions} & {normalise_caption(c) for c in b.captions}
    if caps:
        return f"caption {sorted(caps)[0]!r}"
    media = set(_media_keys(a)) & set(_media_keys(b))
    if media:
        return f"media file {sorted(media)[0].removeprefix('media:')}"
    return "a caption or media file"

"""Audio-caption CSVs: AudioCaps (one caption per row) and Clotho (five caption columns per file).

The format is detected from the header. Each clip is one audio file, named by a pattern over the row's columns
(``{youtube_id}.wav`` for AudioCaps, ``{file_name}`` for Clotho); AudioCaps rows naming the same file are one clip
with several captions. Clips are audio-only: ``video`` is absent.
"""

from __future__ import annotations

import csv
import io
import posixpath
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from avlops.config import ConfigError
from avlops.data.importers.annotations import SourceError, read_text, undecodable
from avlops.data.importers.result import ImportResult, clip_id_from, media_folder
from avlops.data.schema import AudioType, Split

__all__ = ["AUDIOCAPS", "CLOTHO", "FORMATS", "CsvFormat", "detect_format", "import_captions_csv"]


@dataclass(frozen=True)
class CsvFormat:
    """A caption CSV layout: the columns that identify it, where captions are, and the default audio file pattern."""

    name: str
    columns: tuple[str, ...]
    caption_columns: tuple[str, ...]
    audio_pattern: str
    merge_rows: bool  # rows naming the same audio file are one clip (AudioCaps: one caption per row)


AUDIOCAPS = CsvFormat(
    name="audiocaps",
    columns=("audiocap_id", "youtube_id", "start_time", "caption"),
    caption_columns=("caption",),
    audio_pattern="{youtube_id}.wav",
    merge_rows=True,
)
CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
CLOTHO = CsvFormat(
    name="clotho",
    columns=("file_name", *CLOTHO_CAPTIONS),
    caption_columns=CLOTHO_CAPTIONS,
    audio_pattern="{file_name}",
    merge_rows=False,
)
FORMATS = (AUDIOCAPS, CLOTHO)


def detect_format(header: list[str], path: Path) -> CsvFormat:
    """The format whose columns the header holds; :class:`SourceError` naming both layouts otherwise."""
    for fmt in FORMATS:
        if set(fmt.columns) <= set(header):
            return fmt
    expected = "; or ".join(f"{f.name}: {','.join(f.columns)}" for f in FORMATS)
    raise SourceError(f"{path}:1: unknown CSV header {','.join(header)!r}; expected {expected}")


def _pattern_fields(pattern: str, header: list[str], path: Path) -> None:
    names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    unknown = [n for n in names if n not in header]
    if not names or unknown:
        raise ConfigError(
            f"--audio-pattern {pattern!r}: must name columns of {path} in braces"
            + (f"; not columns: {', '.join(unknown)}" if unknown else "")
            + f" (columns: {', '.join(header)})"
        )


@dataclass
class _Clip:
    line: int
    rows: list[int] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


def _rows(path: Path, text: str, width: int, result: ImportResult) -> list[tuple[int, list[str]]]:
    """``(line, cells)`` of each data row with the header's column count and valid UTF-8; the rest are rejected."""
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)  # the header
    rows: list[tuple[int, list[str]]] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as err:
            result.reject(str(path), line, None, f"unreadable CSV row: {err}")
            if reader.line_num < line:  # the reader did not move on: stop instead of looping
                return rows
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            result.reject(str(path), line, None, f"expected {width} columns, got {len(row)}")
        elif bad := undecodable(row):
            result.reject(str(path), line, None, bad)
        else:
            rows.append((line, [c.strip() for c in row]))


def import_captions_csv(
    root: Path,
    csv_path: Path,
    *,
    split: Split = Split.TRAIN,
    audio_dir: str | Path = "audio",
    audio_pattern: str | None = None,
    audio_type: AudioType = AudioType.UNKNOWN,
    source: str | None = None,
    progress: bool = True,
) -> ImportResult:
    """One audio-only record per audio file named in ``csv_path`` (AudioCaps or Clotho, detected from the header).

    The audio path is ``<audio_dir>/<audio_pattern rendered with the row's columns>``; the clip_id is that path
    without the suffix, made valid (:func:`clip_id_from`). ``source`` defaults to the detected format's name.
    """
    text = read_text(csv_path)
    header = [h.strip() for h in next(csv.reader(io.StringIO(text, newline="")), [])]
    if not header:
        raise SourceError(f"{csv_path}: empty CSV, expected a header line")
    if bad := undecodable(header):
        raise SourceError(f"{csv_path}:1: header: {bad}")
    fmt = detect_format(header, csv_path)
    pattern = audio_pattern or fmt.audio_pattern
    _pattern_fields(pattern, header, csv_path)
    _, audio_rel = media_folder(root, audio_dir)
    result = ImportResult()

    clips: dict[str, _Clip] = {}
    for line, cells in _rows(csv_path, text, len(header), result):
        row = dict(zip(header, cells, strict=True))
        name = pattern.format_map(row)
        if not name.strip() or name.endswith("/"):
            result.reject(str(csv_path), line, None, f"--audio-pattern {pattern!r} gives no file name: {name!r}")
            continue
        if name in clips and not fmt.merge_rows:
            first = clips[name].line
            result.reject(str(csv_path), line, None, f"{name!r} is named again (first on line {first})")
            continue
        clip = clips.setdefault(name, _Clip(line))
        clip.rows.append(line)
        clip.captions.extend(row[c] for c in fmt.caption_columns)

    for name, clip in tqdm(clips.items(), desc="building records", unit="clip", disable=None if progress else True):
        audio = PurePosixPath(audio_rel, name).as_posix()
        fields = {
            "clip_id": clip_id_from(posixpath.splitext(name)[0]),
            "audio": audio,
            "captions": clip.captions,
            "audio_type": audio_type.value,
            "split": split.value,
            "source": source or fmt.name,
        }
        # with several rows, say which line caption i came from
        note = f"captions from lines {', '.join(map(str, clip.rows))}" if len(clip.rows) > 1 else None
        result.add(fields, str(csv_path), clip.line, origin=name, note=note)
    return result

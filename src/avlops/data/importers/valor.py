"""VALOR / MSR-VTT style datasets: split id lists, captions in ``txt_mapper.json`` or ``caption_annotation.json``.

The layout of the VALOR code's "Prepare Datasets" (papers.md §1.12)::

    <root>/raw_videos/video0.mp4          one video per id, any common container
    <root>/audio_22050hz/video0.wav       optional separate audio
    train_id.json, test_id.json           ["video0", "video1", ...]
    txt_mapper.json                       {"video0": ["a man talks", ...], ...}
    caption_annotation.json               [{"video_id": "video0", "caption": "a man talks"}, ...]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from avlops.data.importers.annotations import iter_json_array, iter_json_object, undecodable
from avlops.data.importers.result import ImportResult, media_folder
from avlops.data.schema import AUDIO_SUFFIXES, VIDEO_SUFFIXES, AudioType, Split

__all__ = ["VIDEO_PREFERENCE", "import_valor", "index_media"]

#: When one id has files with several suffixes, the first in this order wins.
VIDEO_PREFERENCE = (".mp4", *sorted(VIDEO_SUFFIXES - {".mp4"}))
AUDIO_PREFERENCE = (".wav", *sorted(AUDIO_SUFFIXES - {".wav"}))
_VIDEO_EXTS = "|".join(s.removeprefix(".") for s in VIDEO_PREFERENCE)


@dataclass
class _Captions:
    """One id's captions, where they were first seen, and why they cannot be used (if they cannot)."""

    source: str
    line: int
    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def index_media(folder: Path, preference: tuple[str, ...]) -> dict[str, str]:
    """``{stem: file name}`` for the media files directly in ``folder`` with a suffix in ``preference``.

    One listing of the folder instead of a stat per id and suffix (a VALOR-1M folder holds a million files).
    """
    rank = {s: i for i, s in enumerate(preference)}
    found: dict[str, str] = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() not in rank or not entry.is_file():
                continue
            best = found.get(stem)
            if best is None or (rank[suffix.lower()], entry.name) < (rank[os.path.splitext(best)[1].lower()], best):
                found[stem] = entry.name
    return found


def _load_txt_mapper(path: Path, result: ImportResult) -> dict[str, _Captions]:
    table: dict[str, _Captions] = {}
    for line, key, value in iter_json_object(path, 'a txt_mapper ({"video_id": ["caption", ...]})'):
        if bad := undecodable(key):
            result.reject(str(path), line, None, f"key: {bad}")
            continue
        if key in table:
            table[key].errors.append(f"{path}:{line}: the id appears again (first on line {table[key].line})")
            continue
        entry = table[key] = _Captions(str(path), line)
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            qa = isinstance(texts, list) and any(isinstance(t, dict) and "question" in t for t in texts)
            kind = "question-answer pairs, not captions" if qa else f"not a list of strings ({type(value).__name__})"
            entry.errors.append(f"{path}:{line}: the value is {kind}")
        elif bad := undecodable(texts):
            entry.errors.append(f"{path}:{line}: {bad}")
        else:
            entry.texts = texts
    return table


def _load_caption_annotation(path: Path, result: ImportResult) -> dict[str, _Captions]:
    table: dict[str, _Captions] = {}
    what = 'a caption annotation ([{"video_id": ..., "caption": ...}])'
    for index, (line, item) in enumerate(iter_json_array(path, what)):
        vid = item.get("video_id") if isinstance(item, dict) else None
        if not isinstance(vid, str):
            result.reject(str(path), line, None, f'entry {index}: expected {{"video_id": "<id>", "caption": "<text>"}}')
            continue
        if bad := undecodable(vid):
            result.reject(str(path), line, None, f"entry {index}: video_id: {bad}")
            continue
        entry = table.setdefault(vid, _Captions(str(path), line))
        caption = item.get("caption")
        if not isinstance(caption, str):
            entry.errors.append(f"{path}:{line}: caption is {type(caption).__name__}, not a string")
        elif bad := undecodable(caption):
            entry.errors.append(f"{path}:{line}: caption: {bad}")
        else:
            entry.texts.append(caption)
    return table


def _read_splits(id_lists: Mapping[Split, Path], result: ImportResult) -> dict[str, list[tuple[Split, str, int]]]:
    """``{id: [(split, file, line), ...]}`` in file order; entries that are not id strings are rejected."""
    seen: dict[str, list[tuple[Split, str, int]]] = {}
    for split, path in id_lists.items():
        ids = iter_json_array(path, f'the {split.value} id list (["video0", ...])')
        for index, (line, vid) in enumerate(ids):
            if not isinstance(vid, str):
                result.reject(str(path), line, None, f"entry {index}: expected an id string, got {type(vid).__name__}")
            elif bad := undecodable(vid):
                result.reject(str(path), line, None, f"entry {index}: {bad}")
            else:
                seen.setdefault(vid, []).append((split, str(path), line))
    return seen


def import_valor(
    root: Path,
    id_lists: Mapping[Split, Path],
    *,
    txt_mapper: Path | None = None,
    caption_annotation: Path | None = None,
    video_dir: str | Path = "raw_videos",
    audio_dir: str | Path | None = None,
    audio_type: AudioType = AudioType.UNKNOWN,
    source: str = "msrvtt",
    progress: bool = True,
) -> ImportResult:
    """One record per id of the split lists, with its captions and ``<video_dir>/<id>.<ext>``.

    Exactly one of ``txt_mapper`` and ``caption_annotation`` gives the captions. An id with no captions or no video,
    an id in two splits (every occurrence) and captions whose id is in no split list are rejected with their file and
    line. With ``audio_dir``, ``<audio_dir>/<id>.wav`` (or another audio suffix) is the clip's audio when it exists;
    otherwise the video's own track is used.
    """
    video_path, video_rel = media_folder(root, video_dir)
    videos = index_media(video_path, VIDEO_PREFERENCE)
    audios: dict[str, str] = {}
    audio_rel = "."
    if audio_dir is not None:
        audio_path, audio_rel = media_folder(root, audio_dir)
        audios = index_media(audio_path, AUDIO_PREFERENCE)

    result = ImportResult()
    if txt_mapper is not None and caption_annotation is None:
        captions_file, table = txt_mapper, _load_txt_mapper(txt_mapper, result)
    elif caption_annotation is not None and txt_mapper is None:
        captions_file, table = caption_annotation, _load_caption_annotation(caption_annotation, result)
    else:
        raise ValueError("give exactly one of txt_mapper and caption_annotation")
    occurrences = _read_splits(id_lists, result)

    for vid, occs in tqdm(occurrences.items(), desc="reading ids", unit="clip", disable=None if progress else True):
        if len({split for split, _, _ in occs}) > 1:
            where = ", ".join(f"{split.value} ({src}:{line})" for split, src, line in occs)
            for _, src, line in occs:
                result.reject(src, line, vid, f"the id is in more than one split: {where}")
            continue
        for split, src, line in occs:
            reasons: list[str] = []
            entry = table.get(vid)
            if entry is None:
                reasons.append(f"no captions for this id in {captions_file}")
            else:
                reasons.extend(entry.errors)
            if vid not in videos:
                reasons.append(f"no video file {PurePosixPath(video_rel, vid)}.<{_VIDEO_EXTS}>")
            if reasons or entry is None:
                result.reject(src, line, vid, *reasons)
                continue
            fields = {
                "clip_id": vid,
                "video": PurePosixPath(video_rel, videos[vid]).as_posix(),
                "captions": entry.texts,
                "audio_type": audio_type.value,
                "split": split.value,
                "source": source,
            }
            if vid in audios:
                fields["audio"] = PurePosixPath(audio_rel, audios[vid]).as_posix()
            result.add(fields, src, line)

    for vid, entry in table.items():
        if vid not in occurrences:
            result.reject(entry.source, entry.line, vid, "captions for an id that is in no split list")
    return result

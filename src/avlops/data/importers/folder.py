"""A plain folder: every media file with a same-named ``.txt`` beside it (one caption per non-empty line) is a clip.

::

    <root>/cats/cat01.mp4   <root>/cats/cat01.txt      video (its own audio track)
    <root>/dogs/dog01.jpg   <root>/dogs/dog01.txt      still image
    <root>/rain.wav         <root>/rain.txt            audio only
    <root>/talk.png  <root>/talk.wav  <root>/talk.txt  still image + separate audio: one clip

Hidden files and folders (names starting with ``.``) are skipped; symlinked folders are not followed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from avlops.data.importers.annotations import iter_text_lines, undecodable
from avlops.data.importers.result import ImportResult, clip_id_from
from avlops.data.schema import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, AudioType, Split

__all__ = ["import_folder"]

log = logging.getLogger(__name__)
_SUFFIXES = ", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES | AUDIO_SUFFIXES))


@dataclass
class _Group:
    """The files that share one relative path without suffix (POSIX paths relative to the root)."""

    visual: list[str] = field(default_factory=list)
    audio: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _scan(root: Path) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in dirnames:
            if not d.startswith(".") and (here / d).is_symlink():
                log.warning("%s: symlinked folder, not followed", here / d)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            suffix = suffix.lower()
            if name.startswith(".") or not stem:
                continue
            group = groups.setdefault((rel_dir / stem).as_posix(), _Group())
            if suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES:
                group.visual.append((rel_dir / name).as_posix())
            elif suffix in AUDIO_SUFFIXES:
                group.audio.append((rel_dir / name).as_posix())
            elif suffix == ".txt":
                group.text.append((rel_dir / name).as_posix())
    return {key: g for key, g in sorted(groups.items()) if g.visual or g.audio or g.text}


def _captions(root: Path, rel: str, result: ImportResult, clip_id: str) -> list[str] | None:
    """Non-empty lines of a caption file; None (and the file rejected with each bad line) if any is not UTF-8."""
    captions: list[str] = []
    bad: list[tuple[int, str]] = []
    for n, line in iter_text_lines(root / rel):
        if reason := undecodable(line):
            bad.append((n, reason))
        elif line.strip():
            captions.append(line)
    if bad:
        result.reject(str(root / rel), bad[0][0], clip_id, *(f"line {n}: {reason}" for n, reason in bad))
        return None
    return captions


def import_folder(
    root: Path,
    *,
    split: Split = Split.TRAIN,
    audio_type: AudioType = AudioType.UNKNOWN,
    source: str | None = None,
    progress: bool = True,
) -> ImportResult:
    """One record per media file under ``root`` with a same-named ``.txt`` caption file.

    A video or still image and an audio file with the same name and caption file make one clip (image + sound).
    The clip_id is the relative path without suffix (:func:`clip_id_from`); ``source`` defaults to the folder's name.
    A media file without captions, a caption file without media, and names that collide are rejected.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    source = source or root.resolve().name or "folder"
    result = ImportResult()
    for key, g in tqdm(_scan(root).items(), desc="reading folder", unit="clip", disable=None if progress else True):
        where = str(root / (g.visual or g.audio or g.text)[0])
        if not g.text:
            for rel in (*g.visual, *g.audio):
                result.reject(str(root / rel), None, None, f"no caption file {PurePosixPath(rel).stem}.txt beside it")
            continue
        if not g.visual and not g.audio:
            result.reject(where, None, None, f"caption file without a media file of the same name ({_SUFFIXES})")
            continue
        if len(g.text) > 1 or len(g.visual) > 1 or len(g.audio) > 1:
            names = ", ".join(PurePosixPath(r).name for r in (*g.visual, *g.audio, *g.text))
            result.reject(where, None, None, f"ambiguous: one name, several files of a kind ({names})")
            continue
        clip_id = clip_id_from(key)
        captions = _captions(root, g.text[0], result, clip_id)
        if captions is None:
            continue
        txt = str(root / g.text[0])
        if not captions:  # the caption file's fault, not the media's
            result.reject(txt, None, clip_id, "no caption: the file is empty or holds only blank lines")
            continue
        fields: dict[str, object] = {
            "clip_id": clip_id,
            "captions": captions,
            "audio_type": audio_type.value,
            "split": split.value,
            "source": source,
        }
        if g.visual:
            fields["video"] = g.visual[0]
        if g.audio:
            fields["audio"] = g.audio[0]
        result.add(fields, where, None, origin=key, caption_source=txt)
    return result

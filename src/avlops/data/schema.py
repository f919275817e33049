"""The dataset contract: one record per clip, defined once.

Every later stage (loader, validation suite, feature views, importers, the synthetic generator) reads and writes
this schema. A manifest is a JSON Lines file, one :class:`ClipRecord` per line, stored next to the media it
describes; media paths are relative to the manifest's folder (the *dataset root*) and may never leave it.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "MAX_CAPTION_CHARS",
    "AudioType",
    "ClipRecord",
    "MediaPathError",
    "RecordError",
    "Split",
    "parse_record",
    "resolve_media",
]

#: Captions longer than this are refused: no dataset in the family has one, and they blow up tokenisation.
MAX_CAPTION_CHARS = 1000
CLIP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.:\-]{0,199}$")
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".gif"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"})


class AudioType(StrEnum):
    """What the sound track carries; selects CLIP4VLA's audio type token."""

    VERBAL = "verbal"  # speech
    NONVERBAL = "nonverbal"  # sound events, music, tones
    MIXED = "mixed"  # both
    UNKNOWN = "unknown"  # not labelled: the type token is mixed 50/50


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class RecordError(ValueError):
    """A manifest line that breaks the contract; ``reasons`` lists every problem found."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class MediaPathError(ValueError):
    """A media path that is absolute or escapes the dataset root; it is never opened."""


#: Lone surrogates come from undecodable bytes or ``\\udcxx`` escapes; they cannot be written as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: What a caption may not hold: control characters, the replacement character, lone surrogates.
_BAD_CAPTION_CHAR = re.compile("[\x00-\x1f\ufffd\ud800-\udfff]")


def _has_surrogate(s: str) -> bool:
    return _SURROGATE.search(s) is not None


def _check_relative(p: str) -> str:
    if not p or not p.strip():
        raise ValueError("empty path")
    if _has_surrogate(p):
        raise ValueError(f"path {p!r} contains undecodable bytes")
    if "\\" in p or "\x00" in p:
        raise ValueError(f"path {p!r} contains a backslash or NUL")
    pp = PurePosixPath(p)
    if pp.is_absolute():
        raise ValueError(f"path {p!r} is absolute; paths are relative to the dataset root")
    if ".." in pp.parts:
        raise ValueError(f"path {p!r} escapes the dataset root")
    return p


Caption = Annotated[str, Field()]


class ClipRecord(BaseModel):
    """One clip: at least a video (a still image counts) or an audio file, and one or more captions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_id: str
    video: str | None = None
    audio: str | None = None  # when absent, the video's own audio track is used
    captions: list[Caption]
    audio_type: AudioType = AudioType.UNKNOWN
    split: Split
    source: str
    #: free-form facts about the clip (e.g. the synthetic generator's ground truth); never used as model input.
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("clip_id")
    @classmethod
    def _clip_id(cls, v: str) -> str:
        if not CLIP_ID_PATTERN.fullmatch(v):  # not match(): its "$" would let a trailing newline in
            raise ValueError(f"clip_id {v!r} must be 1-200 characters of letters, digits, '_', '-', '.', ':'")
        return v

    @field_validator("video", "audio")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else _check_relative(v)

    @field_validator("captions")
    @classmethod
    def _captions(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("no captions")
        out = []
        for i, c in enumerate(v):
            text = " ".join(c.split())
            if not text:
                raise ValueError(f"caption {i} is empty or whitespace")
            if len(text) > MAX_CAPTION_CHARS:
                raise ValueError(f"caption {i} has {len(text)} characters (limit {MAX_CAPTION_CHARS})")
            if _BAD_CAPTION_CHAR.search(text):
                raise ValueError(f"caption {i} contains control characters or undecodable bytes")
            out.append(text)
        return out

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("source is empty")
        if _has_surrogate(v):
            raise ValueError("source contains undecodable bytes")
        return v

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, v: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        if any(_has_surrogate(k) or (isinstance(x, str) and _has_surrogate(x)) for k, x in v.items()):
            raise ValueError("contains undecodable bytes")
        return v

    @model_validator(mode="after")
    def _has_media(self) -> ClipRecord:
        if self.video is None and self.audio is None:
            raise ValueError("neither video nor audio is given")
        return self

    @property
    def is_still_image(self) -> bool:
        return self.video is not None and PurePosixPath(self.video).suffix.lower() in IMAGE_SUFFIXES

    def to_json_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude_none=True)
        if not d.get("attributes"):
            d.pop("attributes", None)
        return d


def _reason(e: dict[str, Any]) -> str:
    loc = ".".join(str(x) for x in e["loc"])
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "enum":
        allowed = e.get("ctx", {}).get("expected", "")
        return f"{loc}: unknown value {e['input']!r} (expected {allowed})"
    if e["type"] == "missing":
        return f"{loc}: missing"
    if e["type"] == "extra_forbidden":
        return f"{loc}: unknown field"
    return f"{loc}: {msg}" if loc else msg


def parse_record(data: Any) -> ClipRecord:
    """Validate one decoded JSON object against the contract; raise :class:`RecordError` with every reason."""
    if not isinstance(data, dict):
        raise RecordError([f"expected a JSON object, got {type(data).__name__}"])
    try:
        return ClipRecord.model_validate(data)
    except ValidationError as err:
        raise RecordError([_reason(dict(e)) for e in err.errors()]) from None


def resolve_media(root: Path, rel: str) -> Path:
    """Absolute path of ``rel`` under ``root``, refusing anything that leaves the root (symlinks included).

    The check happens before any file is opened.
    """
    try:
        _check_relative(rel)
    except ValueError as err:
        raise MediaPathError(str(err)) from None
    try:
        base = root.resolve()
        target = (base / rel).resolve()
    except (OSError, RuntimeError) as err:  # Python 3.11 raises RuntimeError on a symlink loop
        raise MediaPathError(f"path {rel!r} cannot be resolved: {err}") from None
    if not target.is_relative_to(base):
        raise MediaPathError(f"path {rel!r} resolves outside the dataset root")
    return target

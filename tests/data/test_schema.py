"""The clip contract: every way a record can break it gives a RecordError that names the field and the reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from avlops.data.schema import (
    MAX_CAPTION_CHARS,
    AudioType,
    ClipRecord,
    MediaPathError,
    RecordError,
    Split,
    parse_record,
    resolve_media,
)


def good(**changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "clip_id": "clip-001",
        "video": "videos/clip-001.mp4",
        "captions": ["a red square moves right"],
        "audio_type": "nonverbal",
        "split": "train",
        "source": "synth",
    }
    rec.update(changes)
    return {k: v for k, v in rec.items() if v is not ...}  # ``...`` drops a field


def reasons_of(data: Any) -> str:
    with pytest.raises(RecordError) as info:
        parse_record(data)
    return "; ".join(info.value.reasons)


def test_good_record_parses_and_normalises_caption_whitespace() -> None:
    rec = parse_record(good(captions=["  a red\tsquare \n moves  "]))
    assert isinstance(rec, ClipRecord)
    assert rec.captions == ["a red square moves"]
    assert rec.audio_type is AudioType.NONVERBAL and rec.split is Split.TRAIN
    assert parse_record(rec.to_json_dict()) == rec


def test_defaults_audio_only_and_still_image() -> None:
    audio_only = parse_record(good(video=..., audio="a/x.wav", audio_type=...))
    assert audio_only.video is None and audio_only.audio_type is AudioType.UNKNOWN
    assert parse_record(good(video="stills/x.PNG")).is_still_image
    assert "attributes" not in audio_only.to_json_dict()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(good(captions=[""]), "captions: caption 0 is empty or whitespace", id="empty-caption"),
        pytest.param(good(captions=["ok", " \t\n "]), "caption 1 is empty or whitespace", id="whitespace-caption"),
        pytest.param(good(captions=[]), "captions: no captions", id="no-captions"),
        pytest.param(good(captions=["x" * 10_000]), f"10000 characters (limit {MAX_CAPTION_CHARS})", id="long-caption"),
        pytest.param(good(captions=["bell\x07"]), "control characters", id="control-char"),
        pytest.param(good(captions=["caf\udce9"]), "undecodable", id="surrogate-caption"),
        pytest.param(good(video="caf\udce9.mp4"), "undecodable bytes", id="surrogate-path"),
        pytest.param(good(attributes={"k": "\udce9"}), "attributes: contains undecodable bytes", id="surrogate-attr"),
        pytest.param(good(audio_type="loud"), "audio_type: unknown value 'loud'", id="unknown-audio-type"),
        pytest.param(good(split="dev"), "split: unknown value 'dev'", id="unknown-split"),
        pytest.param(good(clip_id=...), "clip_id: missing", id="missing-id"),
        pytest.param(good(clip_id="a/b"), "clip_id 'a/b' must be", id="slash-in-id"),
        pytest.param(good(clip_id="abc\n"), "clip_id 'abc\\n' must be", id="newline-after-id"),
        pytest.param(good(clip_id="x" * 201), "must be 1-200 characters", id="long-id"),
        pytest.param(good(video=..., audio=...), "neither video nor audio", id="no-media"),
        pytest.param(good(video="../../etc/passwd"), "escapes the dataset root", id="dotdot"),
        pytest.param(good(video="/etc/passwd"), "is absolute", id="absolute"),
        pytest.param(good(audio="a\\b.wav"), "backslash", id="backslash"),
        pytest.param(good(video=""), "video: empty path", id="empty-path"),
        pytest.param(good(source=" "), "source is empty", id="empty-source"),
        pytest.param(good(colour="red"), "colour: unknown field", id="extra-field"),
        pytest.param(["not", "an", "object"], "expected a JSON object, got list", id="not-object"),
    ],
)
def test_bad_record_names_field_and_reason(data: Any, expected: str) -> None:
    assert expected in reasons_of(data)


def test_every_reason_is_reported_at_once() -> None:
    reasons = reasons_of(good(split="dev", audio_type="loud", captions=[" "]))
    assert "split" in reasons and "audio_type" in reasons and "caption 0" in reasons


def test_resolve_media_inside_root(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    assert resolve_media(tmp_path, "v/a.mp4") == (tmp_path / "v" / "a.mp4").resolve()


@pytest.mark.parametrize("rel", ["../../etc/passwd", "/etc/passwd", "a/../../b.mp4", ""])
def test_resolve_media_refuses_paths_leaving_the_root(tmp_path: Path, rel: str) -> None:
    with pytest.raises(MediaPathError):
        resolve_media(tmp_path, rel)


def test_resolve_media_refuses_symlink_outside_and_symlink_loop(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.mp4"
    root.mkdir()
    outside.write_bytes(b"secret")
    (root / "link.mp4").symlink_to(outside)
    (root / "inside.mp4").write_bytes(b"x")
    (root / "ok.mp4").symlink_to(root / "inside.mp4")
    os.symlink(root / "loop2", root / "loop1")
    os.symlink(root / "loop1", root / "loop2")
    with pytest.raises(MediaPathError, match="outside the dataset root"):
        resolve_media(root, "link.mp4")
    with pytest.raises(MediaPathError):
        resolve_media(root, "loop1")
    assert resolve_media(root, "ok.mp4") == (root / "inside.mp4").resolve()

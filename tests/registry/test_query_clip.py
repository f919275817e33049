"""The clip the deploy step queries a served model with, and what it tells the model about the clip."""

from __future__ import annotations

import json
from pathlib import Path

from avlops.registry.deploy import QueryClip, pick_test_clip


def _record(clip_id: str, split: str, audio_type: str, video: str) -> dict[str, object]:
    return {
        "clip_id": clip_id,
        "video": video,
        "captions": [f"a caption of {clip_id}"],
        "audio_type": audio_type,
        "split": split,
        "source": "test",
    }


def test_the_query_clip_carries_the_manifests_audio_type(tmp_path: Path) -> None:
    # The demo captioned its test clip (speech only) with the audio type left `unknown`, CLIP4VLA's mixed type token,
    # and the served caption added a sound the clip does not have ("with a series of clicks and a voice saying
    # "four""), unlike the evaluation's caption of the same clip. The deploy step must tell the model what the
    # manifest says, as training and evaluation do.
    manifest = tmp_path / "manifest.jsonl"
    records = [
        _record("a", "train", "nonverbal", "clips/a.mp4"),
        _record("still", "test", "mixed", "clips/still.png"),  # a still image is no clip to caption the motion of
        _record("b", "test", "verbal", "clips/b.mp4"),
        _record("c", "test", "nonverbal", "clips/c.mp4"),
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert pick_test_clip(manifest) == QueryClip("b", "a caption of b", tmp_path / "clips/b.mp4", "verbal")


def test_no_test_clip_to_query_with(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(_record("a", "train", "verbal", "clips/a.mp4")) + "\n")
    assert pick_test_clip(manifest) is None

"""The format-robustness matrix (issue 12): real encodings made with FFmpeg and espeak-ng go through a user's path —
imported from a folder with split subfolders and by ratio, checked, preprocessed for the model's config, validated,
trained (tiny) and evaluated. Every bad file is named; every good one is kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from avlops.cli import main
from ffmpeg_media import audio, needs_tools, still_png, truncated_copy, video

pytestmark = [pytest.mark.slow, needs_tools]

REPO = Path(__file__).resolve().parents[2]

#: relative path -> (how to make it, its caption); split folders give the split
GOOD: dict[str, tuple[Callable[[Path], object], str]] = {
    "train/webm.webm": (
        lambda p: video(p, vcodec="libvpx-vp9", acodec="libopus", audio="sine=frequency=300"),
        "a test pattern in a webm with a low tone",
    ),
    "train/matroska.mkv": (lambda p: video(p, audio="sine=frequency=500"), "a matroska clip with a middle tone"),
    "train/surround.mp4": (
        lambda p: video(p, audio="sine=frequency=600", channels=6),
        "six channel surround sound over a test pattern",
    ),
    "train/vfr.mp4": (
        lambda p: video(
            p,
            rate="25",
            vf="select='not(mod(n\\,3))+lt(n\\,10)',setpts=N/FRAME_RATE/TB*1.3",
            audio="sine=frequency=700",
            extra=("-fps_mode", "vfr"),
        ),
        "frames arrive at a variable rate",
    ),
    "train/portrait.mp4": (
        lambda p: video(p, size="48x80", vf="scale=45:81", pix_fmt="yuv444p", audio="sine=frequency=800"),
        "a tall odd sized portrait video",
    ),
    "train/mute.mp4": (lambda p: video(p, audio=None), "a silent video without any sound track"),
    "train/speech.mp3": (
        lambda p: audio(p, "hello there", rate=22050, codec=("-c:a", "libmp3lame", "-b:a", "32k")),
        "someone says hello there",
    ),
    "train/phone.wav": (lambda p: audio(p, "number seven", rate=8000), "a telephone voice says number seven"),
    "test/tone.mp4": (
        lambda p: video(p, audio="sine=frequency=350", extra=("-movflags", "+faststart")),
        "a test pattern with a tone in an mp4",
    ),
    "test/vp9.webm": (
        lambda p: video(p, vcodec="libvpx-vp9", acodec="libopus", audio="sine=frequency=900"),
        "a high tone over a vp9 video",
    ),
    "test/words.wav": (lambda p: audio(p, "good morning", rate=16000), "a voice says good morning"),
    "test/clip.mkv": (lambda p: video(p, audio="sine=frequency=450"), "a short matroska clip with a tone"),
}
#: a still image with a separate sound file: one clip
STILL = ("train/still.png", "train/still.wav", "a still picture while a voice says the cat")
#: truncated copies (of the good file) that must be quarantined
BROKEN = {
    "train/cut_mp4.mp4": "test/tone.mp4",
    "train/cut_webm.webm": "train/webm.webm",
    "train/cut_mkv.mkv": "train/matroska.mkv",
    "train/cut_wav.wav": "train/phone.wav",
}


def clip_id(rel: str) -> str:
    return rel.rsplit(".", 1)[0].replace("/", "__")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mine")
    for rel, (make, caption) in GOOD.items():
        make(root / rel)
        (root / rel).with_suffix(".txt").write_text(caption + "\n")
    still_png(root / STILL[0])
    audio(root / STILL[1], "the cat")
    (root / STILL[0]).with_suffix(".txt").write_text(STILL[2] + "\n")
    for rel, src in BROKEN.items():
        truncated_copy(root / src, root / rel)
        (root / rel).with_suffix(".txt").write_text(f"a broken copy of {src}\n")
    return root


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_folder_of_real_encodings_goes_through_every_stage(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder
    # import with split folders: every truncated file named, every good one kept in its folder's split
    assert main(["data", "import", "folder", "--root", str(root), "--split-folders", "--max-bad-fraction", "0.4"]) == 0
    out = capsys.readouterr().out
    quarantined = rows(root / "quarantine.jsonl")
    assert sorted(q["source"] for q in quarantined) == sorted(str(root / rel) for rel in BROKEN)
    assert all("truncated" in "; ".join(q["reasons"]) for q in quarantined), quarantined
    kept = {r["clip_id"]: r for r in rows(root / "manifest.jsonl")}
    assert set(kept) == {clip_id(rel) for rel in GOOD} | {clip_id(STILL[0])}
    assert {k: r["split"] for k, r in kept.items()} == {clip_id(rel): rel.split("/")[0] for rel in [*GOOD, STILL[0]]}
    assert kept[clip_id(STILL[0])]["video"] == STILL[0] and kept[clip_id(STILL[0])]["audio"] == STILL[1]
    assert "splits from split folders (train/, val/, test/): train 9, val 0, test 4 clips in 13 group(s)" in out

    # and by ratio, into a second manifest: the same clips, dealt by seed, reported
    argv = ["data", "import", "folder", "--root", str(root), "--manifest", "ratio.jsonl", "--max-bad-fraction", "0.4"]
    assert main([*argv, "--split-ratio", "0.6:0.2:0.2", "--seed", "1"]) == 0
    assert "splits by ratio 0.6:0.2:0.2 with seed 1: train 8, val 2, test 3 clips in 13 group(s)" in (
        capsys.readouterr().out
    )
    assert {r["clip_id"] for r in rows(root / "ratio.jsonl")} == set(kept)

    # check: nothing more to say
    manifest = root / "manifest.jsonl"
    assert main(["data", "check", "--manifest", str(manifest), "--report-dir", str(tmp_path / "check")]) == 0
    assert "13 kept, 0 quarantined" in capsys.readouterr().out

    # preprocess for the tiny model: every clip decodes
    pre = tmp_path / "pre"
    argv = ["preprocess", "--manifest", str(manifest), "--out", str(pre), "--model", "tiny", "--workers", "1"]
    assert main([*argv, "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "13 clips in" in said and " 0 quarantined" in said
    stats = {r["clip_id"]: r for r in rows_of_parquet(pre / "stats.parquet")}
    assert not stats[clip_id("train/mute.mp4")]["has_audio"] and stats[clip_id("train/surround.mp4")]["has_audio"]
    assert not stats[clip_id("train/phone.wav")]["has_video"]

    # validate, then train and evaluate on the validated set
    v = tmp_path / "validate"
    argv = ["data", "validate", "--manifest", str(manifest), "--stats", str(pre / "stats.parquet"), "--out", str(v)]
    assert main(argv) == 0, capsys.readouterr().out
    capsys.readouterr()
    run = tmp_path / "run"
    argv = ["train", "--config", str(REPO / "configs/train/tiny.yaml"), "--data", str(pre), "--out", str(run)]
    argv += ["--steps", "2", "--batch-size", "4", "--num-workers", "0", "--quarantine", str(v / "quarantine.jsonl")]
    assert main([*argv, "--no-progress"]) == 0
    assert "finished at step 2/2" in capsys.readouterr().out
    params = tmp_path / "params.yaml"  # a 2-step model is near chance: one explicit threshold instead of defaults
    gate = {"defaults": None, "thresholds": {"retrieval/t2v/R@1": {"min": 0.0}}}
    params.write_text(yaml.safe_dump({"evaluate": {"bless": gate, "quarantine": [str(v / "quarantine.jsonl")]}}))
    argv = ["evaluate", "--checkpoint", str(run), "--data", str(pre), "--out", str(tmp_path / "eval")]
    assert main([*argv, "--params", str(params), "--captioning", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["tasks"]["retrieval/t2v"]["gallery"] == 3  # tone.mp4, vp9.webm, clip.mkv
    assert metrics["tasks"]["retrieval/t2a"]["gallery"] == 4  # and words.wav


def rows_of_parquet(path: Path) -> list[dict[str, object]]:
    import pandas as pd

    records: list[dict[str, object]] = pd.read_parquet(path).to_dict("records")
    return records

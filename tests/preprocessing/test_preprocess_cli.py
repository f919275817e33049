"""``avlops preprocess`` end to end on a tiny manifest, through ``avlops.cli.main``."""

from __future__ import annotations

from pathlib import Path

import pytest
from preprocessing_media import record, write_manifest, write_video

from avlops.cli import ExitCode, main
from avlops.preprocessing.shards import read_index


def test_preprocess_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_video(data / "a.mp4", n_frames=8)
    manifest = write_manifest(data, [record("a", "a.mp4"), record("b", "gone.mp4", split="val")])
    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  resolution: 64\n  frames: 2\n  target_length: 100\n  shard_size: 8\n")
    argv = ["preprocess", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--params", str(params)]
    argv += ["--resolution", "32", "--sample-rate", "16000", "--workers", "1", "--no-progress"]
    assert main(argv) == ExitCode.OK
    text = capsys.readouterr().out
    assert "1 clips in 1 shards" in text and "1 quarantined" in text and "file not found" in text
    index = read_index(tmp_path / "out")
    assert index["config"]["resolution"] == 32 and index["config"]["frames"] == 2  # flag over file over default
    assert main(argv) == ExitCode.OK
    assert "1 resumed from finished shards" in capsys.readouterr().out


def test_no_usable_clip_fails(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [record("b", "gone.mp4")])
    argv = ["preprocess", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == ExitCode.FAILED


def test_help_explains_the_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preprocess", "--help"]) == 0
    text = capsys.readouterr().out
    assert "index.json" in text and "quarantine.jsonl" in text and "--workers" in text


def test_missing_manifest_is_an_input_error(tmp_path: Path) -> None:
    argv = ["preprocess", "--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--no-progress"]) == ExitCode.INPUT

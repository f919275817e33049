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


def test_an_unparsable_line_is_printed_without_a_clip_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 point 8: `preprocess` printed `[None]` as the id of an undecodable manifest line."""
    write_video(tmp_path / "a.mp4", n_frames=8)
    manifest = write_manifest(tmp_path, [record("a", "a.mp4")])
    manifest.write_text(manifest.read_text() + "{not json\n")
    argv = ["preprocess", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--model", "tiny"]
    assert main([*argv, "--workers", "1", "--no-progress"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"quarantined: {manifest}:2: not valid JSON" in out and "[None]" not in out


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


def test_the_model_config_sets_the_preprocessing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 point 4: the default settings (224 px, 22050 Hz) fit neither shipped model; --model makes data that
    fits one, and settings that contradict it are refused naming each one and the fix."""
    from avlops.models.vla import VLAConfig
    from avlops.training.data import ShardDataset
    from avlops.training.params import load_model_config

    data = tmp_path / "data"
    write_video(data / "a.mp4", n_frames=8)
    write_video(data / "b.mp4", n_frames=8)
    manifest = write_manifest(data, [record("a", "a.mp4"), record("b", "b.mp4")])
    base = ["preprocess", "--manifest", str(manifest), "--workers", "1", "--no-progress"]
    tiny: VLAConfig = load_model_config("tiny")

    assert main([*base, "--out", str(tmp_path / "default")]) == ExitCode.OK
    capsys.readouterr()
    with pytest.raises(Exception, match=r"frames are \[3, 224, 224\], the model takes \[3, 32, 32\];.* preprocess "
                       r"it for this model: avlops preprocess --model tiny --manifest"):  # fmt: skip
        ShardDataset(tmp_path / "default", tiny, model_name="tiny")

    assert main([*base, "--out", str(tmp_path / "tiny"), "--model", "tiny"]) == ExitCode.OK
    said = capsys.readouterr().out
    assert "preprocessing for model 'tiny': 32 px frames, 64x128 fbank slices at 16000 Hz, 16-token captions" in said
    config = read_index(tmp_path / "tiny")["config"]
    assert (config["resolution"], config["target_length"], config["sample_rate"], config["context_length"]) == (
        32,
        128,
        16000,
        16,
    )
    assert config["model"] == "tiny"
    assert len(ShardDataset(tmp_path / "tiny", tiny)) == 2  # fits

    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  model: tiny\n  resolution: 224\n")
    assert main([*base, "--out", str(tmp_path / "x"), "--params", str(params)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "resolution 224 (model 'tiny' needs 32)" in err and "avlops preprocess --model tiny" in err
    assert main([*base, "--out", str(tmp_path / "x"), "--model", "tiny", "--frames", "9"]) == ExitCode.USAGE
    assert "frames 9 (the decoder holds 8)" in capsys.readouterr().err

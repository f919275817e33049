"""``avlops train``: exit codes and messages for a good run, a bad config and missing data."""

from __future__ import annotations

from pathlib import Path

import pytest

from avlops.cli import main as cli_main

TINY = Path(__file__).resolve().parents[2] / "configs" / "train" / "tiny.yaml"


def test_train_command(tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--config", str(TINY), "--data", str(tiny_data), "--out", str(tmp_path / "run")]
    assert cli_main([*argv, "--steps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished at step 2/2 (started at 0) on 1 process(es)" in out and "loss: total" in out
    assert "loss curve (step: total): 1: " in out and (tmp_path / "run" / "loss_curve.png").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "model.safetensors").is_file()


def test_params_section_and_bad_values(tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  model: tiny\n  steps: 1\n  batch_sise: 8\n", encoding="utf-8")
    argv = ["train", "--params", str(params), "--data", str(tiny_data), "--out", str(tmp_path / "run")]
    assert cli_main(argv) == 2
    assert "[train]: batch_sise: Extra inputs are not permitted" in capsys.readouterr().err
    params.write_text("train:\n  model: tiny\n  steps: 1\n  objective: {alpha: fast}\n", encoding="utf-8")
    assert cli_main(argv) == 2
    assert "objective: alpha: expected float" in capsys.readouterr().err


def test_missing_data_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--config", str(TINY), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")]
    assert cli_main([*argv, "--no-progress"]) == 3
    assert "no index.json" in capsys.readouterr().err


def test_bad_flag_values_are_usage_errors(tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--config", str(TINY), "--data", str(tiny_data), "--out", str(tmp_path / "run")]
    assert cli_main([*argv, "--steps", "0"]) == 2
    assert "command line: steps: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert cli_main([*argv, "--batch-size", "1"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_data_and_out_come_from_flags_or_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--config", str(TINY)]) == 2
    assert "data, out: give --data and --out or set them in the config" in capsys.readouterr().err

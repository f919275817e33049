"""The modality experiment end to end on a tiny corpus: real synth, preprocessing, training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from avlops.cli import main
from avlops.config import build, load_yaml
from avlops.evaluation.params import EvaluateConfig
from avlops.experiments.modality import (
    ExperimentResult,
    RunOutcome,
    eval_config,
    markdown_table,
    paired_differences,
    train_config,
)
from avlops.experiments.params import ModalityExperimentConfig, Variant
from avlops.modality import Modality
from avlops.training.params import TrainConfig, resolve

REPO = Path(__file__).resolve().parents[2]

#: the shipped config, shrunk: 24 one-second clips of 32 px for the tiny model, 2 training steps per run
TINY: dict[str, Any] = {
    "seeds": [0],
    "synth": {"clips": 24, "seconds": 1.0, "fps": 4, "size": 32, "workers": 1, "test_fraction": 0.3},
    "preprocess": {
        "resolution": 32,
        "frames": 2,
        "eval_frames": 2,
        "target_length": 128,
        "workers": 1,
        "context_length": 16,
    },
    "train": {"model": "tiny", "epochs": None, "steps": 2, "batch_size": 4, "num_workers": 0},
    "evaluate": {"beam_size": 1, "max_caption_len": 6, "examples": 1},
}


def _config(tmp_path: Path) -> Path:
    cfg = load_yaml(REPO / "configs/experiments/modality.yaml")
    for section, values in TINY.items():
        cfg[section] = {**cfg[section], **values} if isinstance(values, dict) else values
    cfg["out"] = str(tmp_path / "exp")
    path = tmp_path / "modality.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_variants_change_only_what_they_say(tmp_path: Path) -> None:
    base = build(TrainConfig, {"model": "tiny", "steps": 1, "objective": {"caption": {"groups": ["tav"]}}})
    full = train_config(base, Variant.FULL, 3, tmp_path)
    assert full == base.model_copy(update={"seed": 3})
    video = resolve(train_config(base, Variant.VIDEO_ONLY, 3, tmp_path))
    assert [g.value for g in video.objective.groups] == ["tv"]
    assert video.objective.caption is not None and [g.value for g in video.objective.caption.groups] == ["tv"]
    no_token = resolve(train_config(base, Variant.NO_TYPE_TOKEN, 3, tmp_path))
    assert not no_token.model.audio.type_token and resolve(full).model.audio.type_token
    assert no_token.model.text == resolve(full).model.text  # everything else as the recipe
    ec = eval_config(EvaluateConfig(), Variant.VIDEO_ONLY, tmp_path / "ckpt", tmp_path / "data", tmp_path / "ev")
    assert (
        ec.retrieval == (Modality.VIDEO,) and ec.captioning == (Modality.VIDEO,) and ec.data == str(tmp_path / "data")
    )


def test_shipped_config_loads() -> None:
    cfg = build(ModalityExperimentConfig, load_yaml(REPO / "configs/experiments/modality.yaml"))
    assert cfg.variants == tuple(Variant) and cfg.seeds == (0, 1, 2) and cfg.train.model == "small"


@pytest.mark.slow
def test_experiment_writes_the_papers_table_and_reuses_finished_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["experiment", "modality", "--config", str(config), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "exp"
    table = (out / "table.md").read_text()
    assert table in printed and str(out / "modality.png") in printed
    rows = {line.split(" | ")[0]: line.split(" | ")[1:] for line in table.splitlines() if line.startswith("| `")}
    assert set(rows) == {"| `full`", "| `video_only`", "| `no_type_token`"}
    # video-only: only the video columns (t->video R@1/5/10, CIDEr from video) hold numbers
    video_only = [c.strip(" |") for c in rows["| `video_only`"]]
    assert [c != "—" for c in video_only] == [True] * 3 + [False] * 6 + [True, False, False]
    assert all(c.strip(" |") != "—" for c in rows["| `full`"])
    results = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r["seed"]) for r in results["runs"]] == [
        ("full", 0),
        ("video_only", 0),
        ("no_type_token", 0),
    ]
    full = results["runs"][0]["metrics"]
    assert 0 <= full["retrieval/t2av/R@1"] <= 100 and "captioning/av/CIDEr" in full
    assert (out / "eval/full/seed-0/report.html").is_file() and (out / "modality.png").stat().st_size > 0

    # a rerun trains and evaluates nothing again
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("eval/*/seed-0/metrics.json")}
    assert main(["experiment", "modality", "--config", str(config), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _result(metrics: dict[tuple[Variant, int], dict[str, float]]) -> ExperimentResult:
    runs = tuple(RunOutcome(v, s, "ckpt", "eval", m) for (v, s), m in metrics.items())
    corpus = {"clips": 10, "by_split": {"train": 6, "test": 4}}
    return ExperimentResult(Path("out"), corpus, (0, 1, 2), tuple(Variant), runs)


def test_paired_differences_match_seeds_and_skip_missing_runs() -> None:
    t2v, t2av = "retrieval/t2v/R@1", "retrieval/t2av/R@1"
    result = _result(
        {
            (Variant.FULL, 0): {t2v: 10.0, t2av: 60.0},
            (Variant.FULL, 1): {t2v: 20.0, t2av: 50.0},
            (Variant.FULL, 2): {t2v: 5.0, t2av: 70.0},
            (Variant.VIDEO_ONLY, 0): {t2v: 15.0},
            (Variant.VIDEO_ONLY, 2): {t2v: 75.0},  # seed 1 missing: left out, not paired with another seed
        }
    )
    assert paired_differences(result, Variant.FULL, t2av, Variant.FULL, t2v) == [50.0, 30.0, 65.0]
    assert paired_differences(result, Variant.FULL, t2av, Variant.VIDEO_ONLY, t2v) == [45.0, -5.0]
    assert paired_differences(result, Variant.FULL, t2av, Variant.NO_TYPE_TOKEN, t2av) == []
    table = markdown_table(result)
    assert "- Audio helps within `full` (text→audio+video R@1 minus text→video R@1): 48.3 ± 17.6 points; " in table
    assert "higher in 3 of 3 seeds." in table
    assert "`video_only` text→video R@1, same seed): 20.0 ± 35.4 points; higher in 1 of 2 seeds." in table
    assert "Audio type token" not in table  # no no_type_token runs: no line rather than an empty one


def test_bad_variant_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["experiment", "modality", "--config", str(_config(tmp_path)), "--variants", "full", "audio_only"]
    assert main(argv) == 2
    assert "variants.1: Input should be 'full', 'video_only' or 'no_type_token'" in capsys.readouterr().err

"""``avlops demo`` end to end: every stage of the real ``dvc.yaml`` on a tiny corpus, in a throw-away project.

Real DVC, git, PyAV, Great Expectations, Feast and Triton: the test proves the README's main job works, that a second
run is a no-op, that the summary names the validation report and a real online feature lookup, and that the blessed
model is registered, served and queried over gRPC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dvc.repo  # noqa: F401 - import DVC (and its log handlers) at collection, not inside a captured test
import pytest
import yaml

from avlops.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "synth": {"clips": 12, "seconds": 1.0, "fps": 4, "size": 32, "workers": 1, "test_fraction": 0.4},
    "preprocess": {
        "model": "tiny", "frames": 2, "eval_frames": 2, "workers": 1, "shard_size": 4,
    },
    # a 2-step model is not well above chance: the default checks are off, one threshold keeps the gate closed-safe
    "evaluate": {"beam_size": 1, "max_caption_len": 6,
                 "bless": {"defaults": None, "thresholds": {"retrieval/t2av/R@1": {"min": 0.0}}}},
    "train": {"model": "tiny", "steps": 2, "epochs": None, "batch_size": 4, "num_workers": 0, "checkpoint_every": 2,
              "metrics": {"log_every": 1}},
}  # fmt: skip
ENV = {
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "avlops test",
    "GIT_AUTHOR_EMAIL": "test@avlops.invalid",
    "GIT_COMMITTER_NAME": "avlops test",
    "GIT_COMMITTER_EMAIL": "test@avlops.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(r"ignore::DeprecationWarning")]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    for code in ("src", "configs"):  # the stages' code deps
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section] = {**params[section], **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "project"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    monkeypatch.chdir(root)
    return root


def test_demo_runs_every_stage_then_is_up_to_date_and_gates_on_blessing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--params", str(project / "params.yaml")]) == 0
    out = capsys.readouterr().out
    ran = out.split("stages run: ")[1].split(" in ")[0].split(", ")
    assert sorted(ran) == sorted(["synth", "check", "preprocess", "validate", "features", "train", "evaluate"])
    assert ran.index("validate") < ran.index("train") < ran.index("evaluate")  # the gates come first
    assert "12 clips kept, 0 quarantined" in out
    assert "validation PASSED" in out
    docs = project / "reports" / "validate" / "data_docs" / "index.html"
    assert str(docs) in out and docs.is_file()
    assert "online lookup syn-000000" in out
    assert "training artifacts/train/small (tiny model):" in out and "loss curve (step: total): 1: " in out
    assert "finished at step 2/2" in out and (project / "artifacts/train/small/loss_curve.png").is_file()
    assert "evaluation on the test split (reports/evaluate):" in out and "  t2av  R@1/5/10 " in out
    assert "  blessing: BLESSED" in out and "passed: retrieval/t2av/R@1 = " in out
    assert f"  report: {project / 'reports/evaluate/report.html'}" in out
    # serving: the blessed model registered, served by a real Triton and queried over gRPC
    assert "registered version 1 in artifacts/registry (challenger -> v1, champion -> v1)" in out
    assert "Triton served it at 127.0.0.1:" in out
    hits = out.split("(the words of test clip ")[1].split("  caption ")[0].splitlines()[1:]
    assert len(hits) == 5 and hits[0].lstrip().startswith("1. syn-")
    assert "  caption " in out and "clip embeddings published to Feast (view clip_embedding)" in out
    assert (project / "artifacts/registry/models").is_dir()

    index = json.loads((project / "data" / "preprocessed" / "index.json").read_text())
    assert index["clips"] == 12 and index["quarantined"] == 0
    assert (project / ".dvc-storage").is_dir()  # pushed to the default local remote
    assert (project / "dvc.lock").is_file()

    assert main(["demo", "--no-serve", "--params", str(project / "params.yaml")]) == 0
    assert "stages run: none (everything up to date)" in capsys.readouterr().out

    # a gate the model cannot pass: only evaluate reruns, it stops the pipeline and nothing new is registered
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["bless"]["thresholds"]["retrieval/t2av/R@1"] = {"min": 101.0}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["demo", "--no-push", "--params", str(project / "params.yaml")]) == 1
    captured = capsys.readouterr()
    assert "failed to reproduce 'evaluate'" in captured.err
    verdict = json.loads((project / "reports/evaluate/blessing.json").read_text())
    assert verdict["blessed"] is False and "retrieval/t2av/R@1" in json.dumps(verdict["reasons"])
    assert "registered version" not in captured.out
    assert sorted(p.name for p in (project / "artifacts/registry/models").glob("*/2")) == []


def test_demo_fails_with_exit_1_when_validation_gate_fails(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validation"]["min_duration_s"] = 5.0  # every 1 s clip is now "too short": the gate must stop the run
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["demo", "--no-push", "--params", str(project / "params.yaml")]) == 1
    captured = capsys.readouterr()
    assert "failed to reproduce 'validate'" in captured.err
    assert not (project / "artifacts" / "feast").exists()  # nothing after the gate ran
    assert not (project / "artifacts" / "train").exists()

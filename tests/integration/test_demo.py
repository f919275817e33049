"""``avlops demo`` end to end on a tiny corpus, in a throw-away project.

Real DVC, git, PyAV, kfp.local, Great Expectations, Feast, torchrun and Triton: the test proves the README's main job
works: DVC makes and pushes the dataset, the pretrain pipeline runs every step, the blessed model is registered,
served and queried over gRPC, a second run reuses every deterministic step, and an unblessed model is not registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dvc.repo  # noqa: F401 - import DVC (and its log handlers) at collection, not inside a captured test
import pytest
import yaml

from avlops.cli import main
from tiny_project import ENV, scaffold

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # three demo runs on a busy 2-core machine: a safety limit, not a deadline
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning"),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "project"
    scaffold(root)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "project"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    monkeypatch.chdir(root)
    return root


def _rows(out: str) -> dict[str, str]:
    """The run summary's table: stage -> status."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("stage", "---"):
            rows[cells[0]] = cells[1]
    return rows


def test_demo_makes_the_dataset_then_runs_the_pretrain_pipeline_and_reuses_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--params", str(project / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert "== dataset: dvc repro synth" in out and "made: data/synth" in out
    assert "pushed " in out and (project / ".dvc-storage").is_dir()  # the dataset is in the DVC remote
    assert "dvc.lock has uncommitted changes: the pipeline reads the dataset from the working tree" in out
    assert "== pipeline: pretrain on kfp.local" in out and "✓ evaluate success in " in out
    rows = _rows(out)
    assert rows and all(status == "ran" for status in rows.values()), rows
    assert list(rows)[:3] == ["resolve", "dataset", "check"] and list(rows)[-1] == "deploy"
    assert "# Served version 1" in out and "(the words of test clip `syn-" in out and "**caption** of `" in out
    assert "train/model: " in out and "validate/data_docs: " in out and "register/registered: " in out
    card = json.loads((project / "artifacts/registry/versions/1/card.json").read_text())
    assert card["lineage"]["rev"] == "workspace" and card["lineage"]["commit"].startswith("workspace@")
    assert card["lineage"]["path"] == "data/synth" and card["lineage"]["content_hash"].endswith(".dir")

    assert main(["demo", "--no-push", "--params", str(project / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert "up to date: data/synth" in out
    rows = _rows(out)
    assert {s for s, status in rows.items() if status == "reused"} == {
        "dataset", "check", "preprocess", "validate", "train", "evaluate", "catalogue", "deploy",
    }  # fmt: skip
    assert "# Served version 1" in out  # the served answers of the version, from the run that served it

    # a gate the model cannot pass: evaluate runs again, registration is skipped and the demo fails
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["bless"]["thresholds"]["retrieval/t2av/R@1"] = {"min": 101.0}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["demo", "--no-push", "--params", str(project / "params.yaml")]) == 1
    captured = capsys.readouterr()
    assert _rows(captured.out)["register"] == "skipped" and "retrieval/t2av/R@1" in captured.out
    assert not (project / "artifacts/registry/versions/2").exists()

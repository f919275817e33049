"""The pipelines run end to end on kfp.local with the real components, on a tiny DVC-versioned dataset: a blessed,
registered, published and served model; a second run that reuses every deterministic step; the evaluate and
catalogue_refresh pipelines on the registered version; and every bad input the pipelines must name: a bad dataset
reference, a dataset that fails validation, an unblessed model, a task that crashes, bad parameters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from avlops.cli import main

# A pipeline run is minutes of real work on a busy 2-core machine: a generous safety limit per test, not a deadline.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.triton,
    pytest.mark.timeout(1800),
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning"),
]


def _run(project: Path, *extra: str) -> list[str]:
    return ["pipeline", "run", *extra, "--params", str(project / "params.yaml"), "--root", str(project / "kfp")]


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """The summary table: stage -> (status, detail)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("stage", "---"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_pretrain_end_to_end(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_run(project, "pretrain", "--local")]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert [s for s, (status, _) in rows.items() if status != "ran"] == [], rows
    assert "▶ train ..." in out and "✓ train success in " in out  # each task and its time, as it runs
    assert "# Served version 1" in out and "**caption** of `" in out  # served on Triton, queried over gRPC
    assert "(audio type `" in out and "(audio type `unknown`" not in out  # the clip's type, from the manifest
    card = json.loads((project / "artifacts/registry/versions/1/card.json").read_text())
    head = (project / ".git" / "refs" / "heads" / "main").read_text().strip()
    assert card["lineage"]["commit"] == head and card["lineage"]["path"] == "data/synth"
    assert card["lineage"]["run"].startswith("avlops-pretrain-")
    assert "validate/data_docs: " in out and "evaluate/report: " in out and "train/model: " in out
    assert "metrics: retrieval/t2v/R@1 " in out  # the Metrics artifact's headline figures


def test_a_second_run_reuses_every_deterministic_step(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_run(project, "pretrain", "--local")]) == 0
    rows = _rows(capsys.readouterr().out)
    reused = {"dataset", "check", "preprocess", "validate", "train", "evaluate", "catalogue", "deploy"}
    assert {s for s, (status, _) in rows.items() if status == "reused"} == reused
    assert rows["resolve"][0] == "ran" and rows["gate-blessing"][0] == "ran"  # never cached: they decide
    assert "reused version 1" in rows["register"][1]
    assert not (project / "artifacts/registry/versions/2").exists()


def test_evaluate_and_catalogue_refresh_a_registered_version(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_run(project, "evaluate", "--local", "--version", "1")]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["evaluate"][0] == "ran" and "BLESSED" in rows["evaluate"][1] and "train" not in rows
    assert main([*_run(project, "catalogue_refresh", "--local", "--version", "1")]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["publish"][0] == "ran" and "12 clip embeddings of version 1" in rows["publish"][1]
    assert main([*_run(project, "evaluate", "--local")]) == 2  # which version: refused before anything runs


def test_an_unblessed_model_is_not_registered(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gate = "--set=evaluate.bless.thresholds={retrieval/t2av/R@1: {min: 101.0}}"
    assert main([*_run(project, "pretrain", "--local", gate)]) == 1
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert rows["evaluate"][0] == "ran" and rows["train"][0] == "reused"
    assert rows["register"] == ("skipped", rows["register"][1]) and "retrieval/t2av/R@1" in rows["register"][1]
    assert rows["deploy"][0] == "skipped" and "not done: register, publish, deploy skipped" in captured.err
    assert not (project / "artifacts/registry/versions/2").exists()


def test_a_dataset_that_fails_validation_stops_at_the_gate(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_run(project, "pretrain", "--local", "--set", "validation.min_duration_s=5.0")]) == 1
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["validate"][0] == "ran" and rows["gate-validation"][0] == "failed"
    assert "the validation gate failed: 12 of 12 clips bad" in rows["gate-validation"][1]
    for stage in ("features", "train", "evaluate", "register"):
        assert rows[stage][0] == "skipped" and "the validation gate failed" in rows[stage][1]
    assert "validate/data_docs: " in out  # the Data Docs of the failed validation are an artifact
    docs = Path(out.split("validate/data_docs: ")[1].split()[0])
    assert docs.is_file() and "duration" in docs.read_text()


def test_a_crashing_task_is_named_in_the_summary(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_run(project, "pretrain", "--local", "--set", "train.model=configs/model/missing.yaml")]) == 1
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert rows["train"][0] == "failed" and "missing.yaml" in rows["train"][1]
    assert "**train failed**" in captured.out and rows["evaluate"][0] == "not reached"


def test_a_bad_dataset_reference_fails_at_the_first_step(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_run(project, "pretrain", "--local", "--dataset-rev", "no-such-branch")]) == 1
    rows = _rows(capsys.readouterr().out)
    assert rows["resolve"][0] == "failed" and "dataset rev 'no-such-branch': not a revision" in rows["resolve"][1]
    assert rows["check"][0] == "not reached"
    assert main([*_run(project, "pretrain", "--local", "--dataset-path", "data/none")]) == 1
    assert "dataset path 'data/none': not in" in _rows(capsys.readouterr().out)["resolve"][1]


def test_bad_parameters_are_refused_before_any_task_starts(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = project / "kfp" / "runs"
    before = sorted(runs.iterdir())
    assert main([*_run(project, "pretrain", "--local", "--set", "train.epochs=many")]) == 2
    assert main([*_run(project, "pretrain", "--local", "--set", "nosuch.key=1")]) == 2
    err = capsys.readouterr().err
    assert "parameter train: epochs" in err and "--set 'nosuch.key=1': expected SECTION.KEY=VALUE" in err
    assert sorted(runs.iterdir()) == before


def test_the_deploy_step_starts_a_rollout_of_the_version_it_registered(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy.mode=rollout: without a rollout platform the deploy step fails, saying how to start one; with the
    platform up (avlops rollout up, on the champion) the same pipeline hands the version it registered to a real
    canary rollout, whose id and phase the summary and the step's output carry."""
    import yaml

    from avlops.rollout.controller import Controller
    from avlops.rollout.daemon import Daemon
    from avlops.rollout.platform import down

    held = tmp_path / "held.yaml"  # 30 % to the canary, then wait for a person
    held.write_text(yaml.safe_dump({"strategy": {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}}))
    workdir = tmp_path / "platform"
    registry = project / "artifacts" / "registry"
    # train.seed=1: other weights, so the run registers a new version 2 (the champion is 1)
    sets = [
        f"--set={s}"
        for s in ("deploy.mode=rollout", f"deploy.workdir={workdir}", f"deploy.spec={held}", "train.seed=1")
    ]
    assert main([*_run(project, "pretrain", "--local", *sets)]) == 1
    rows = _rows(capsys.readouterr().out)
    assert rows["register"][0] == "ran" and (registry / "versions" / "2").is_dir()
    assert rows["deploy"][0] == "failed" and "no rollout platform is up in" in rows["deploy"][1]
    assert f"avlops rollout up --repository {registry}" in rows["deploy"][1]

    assert main(["rollout", "up", "--repository", str(registry), "--workdir", str(workdir)]) == 0  # the champion: 1
    try:
        assert main([*_run(project, "pretrain", "--local", *sets)]) == 0
        out = capsys.readouterr().out
        rows = _rows(out)
        state = Controller(workdir).state()
        assert state is not None and state.version == 2 and state.stable_version == 1
        assert rows["deploy"][0] == "ran" and f"rollout {state.id} of v2 over v1: Progressing" in rows["deploy"][1]
        assert "# Rollout of version 2" in out and f"Rollout `{state.id}`" in out
        run = sorted((project / "kfp" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1]
        outputs = json.loads((run / "deploy" / "executor_output.json").read_text())["parameterValues"]
        assert outputs["rollout_id"] == state.id and outputs["rollout_phase"] == "Progressing"
        assert (run / "deploy" / "manifests" / "overlays" / "gpu" / "kustomization.yaml").is_file()
        # the controller outlived the pipeline task: the canary takes its 30 %, then the rollout waits
        deadline = time.monotonic() + 300
        while (state := Controller(workdir).state()) is not None and state.phase.value != "Paused":
            assert time.monotonic() < deadline, state.model_dump_json(indent=1)
            time.sleep(0.2)
        assert state is not None and state.weight == 30
        assert main(["rollout", "abort", "--workdir", str(workdir)]) == 0
    finally:
        Daemon(workdir / "rollout", "controller").stop()
        down(workdir)

"""The run summary from the ledger: ran, reused from the cache, skipped behind a failed gate, failed, crashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from avlops.flow.ledger import Ledger, StepRecord, StepStatus
from avlops.flow.lineage import Lineage, carried, run_key
from avlops.flow.summary import render_summary, summarise

STAGES = ["resolve", "dataset", "check", "train", "evaluate", "gate-blessing", "register", "deploy"]


def test_run_key_reads_the_run_from_local_and_cluster_uris() -> None:
    assert run_key("/root/runs/avlops-pretrain-2026-12-02-00-48-48-003659/train/model") == (
        "avlops-pretrain-2026-12-02-00-48-48-003659"
    )
    uuid = "0b7c3f4e-1d2a-4b8e-9f00-123456789abc"
    assert run_key(f"minio://mlpipeline/v2/artifacts/avlops-pretrain/{uuid}/train/42/model") == uuid


def test_lineage_is_carried_with_the_run_that_made_the_output() -> None:
    lin = Lineage("repo", "data/synth", "HEAD", "c0ffee", "abc.dir", run="first")
    meta = carried({"avlops_lineage": lin.to_dict()}, "/r/avlops-pretrain-2026-12-02-01-00-00-000001/train/model")
    assert meta["avlops_lineage"]["commit"] == "c0ffee" and meta["pipeline_run"].endswith("000001")
    with pytest.raises(ValueError, match="dataset step"):
        carried({}, "/x/y/z")


def test_summary_names_what_ran_what_was_reused_skipped_and_failed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "run-1")
    for stage in ("resolve", "evaluate"):
        with ledger.step(stage) as rec:
            rec.notes.append(f"{stage} note")
    with ledger.step("gate-blessing") as rec:
        rec.gate = {"name": "blessing", "passed": False, "reasons": ["retrieval/t2av/R@1 = 3 < 50"]}
    lines = {ln.stage: ln for ln in summarise(ledger.read(), STAGES, "SUCCEEDED", "")}
    assert lines["resolve"].status == "ran" and "resolve note" in lines["resolve"].detail
    assert lines["dataset"].status == "reused" and lines["train"].status == "reused"
    assert lines["register"].status == "skipped" and "R@1 = 3 < 50" in lines["register"].detail
    assert lines["deploy"].status == "skipped"
    text, statuses = render_summary(ledger, STAGES, pipeline="pretrain", run="run-1", state="SUCCEEDED")
    assert "| register | skipped | the blessing gate failed: retrieval/t2av/R@1 = 3 < 50 |" in text
    assert statuses["evaluate"] == "ran"


def test_a_failed_task_is_named_with_its_error_and_later_stages_are_not_reached(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "run-2")
    with ledger.step("resolve"):
        pass
    with pytest.raises(RuntimeError), ledger.step("dataset"):
        raise RuntimeError("dataset rev 'nope': not a revision")
    text, statuses = render_summary(ledger, STAGES, pipeline="pretrain", run="run-2", state="FAILED", error="x")
    assert "**dataset failed**" in text and "RuntimeError: dataset rev 'nope': not a revision" in text
    assert statuses["check"] == "not reached" and statuses["deploy"] == "not reached"


def test_a_step_whose_process_died_shows_as_crashed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "run-3")
    ledger.write(StepRecord("train", StepStatus.STARTED, "2026-12-02T00:00:00+00:00"))
    lines = {ln.stage: ln for ln in summarise(ledger.read(), STAGES, "FAILED", "killed")}
    assert lines["train"].status == "crashed"

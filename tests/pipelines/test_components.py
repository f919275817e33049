"""Each component's Python function on tiny data, in pipeline order, without an orchestrator: the components are thin
(their logic is avlops.flow.steps) and their artifact contracts hold. Real DVC, GE, Feast, torchrun and Triton."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import dsl

from avlops.config import load_section
from avlops.flow.arguments import pipeline_defaults
from avlops.flow.lineage import LINEAGE_KEY
from avlops.params import ProjectParams
from components.catalogue import catalogue, publish
from components.check import check
from components.dataset import materialize_dataset, resolve_dataset
from components.deploy import deploy
from components.evaluate import evaluate
from components.features import features
from components.gate import gate
from components.preprocess import preprocess
from components.register import fetch_version, register
from components.summary import summary
from components.train import train
from components.validate import validate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.triton,
    pytest.mark.timeout(1800),  # minutes of real work on a busy 2-core machine: a safety limit, not a deadline
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning"),
]


def _out(cls: type[dsl.Artifact], root: Path, task: str, name: str) -> Any:
    """An output artifact laid out as a run lays it out: <runs>/<run>/<task>/<name>."""
    path = root / "runs" / "python-func-run" / task / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return cls(name=name, uri=str(path), metadata={})


def test_components_in_pipeline_order(project: Path, tmp_path: Path) -> None:
    params = load_section(project / "params.yaml", None, ProjectParams)
    d = pipeline_defaults(params, project)
    d["features"]["repo_dir"] = str(tmp_path / "feast")
    d["registry"]["repository"] = str(tmp_path / "registry")
    ws = str(tmp_path / "workspace")

    pinned = _out(dsl.Artifact, tmp_path, "resolve-dataset", "pinned")
    commit, content_hash = resolve_dataset.python_func(ref=d["dataset"], workspace=ws, pinned=pinned)
    assert pinned.metadata[LINEAGE_KEY]["commit"] == commit and content_hash.endswith(".dir")

    ds = _out(dsl.Dataset, tmp_path, "materialize-dataset", "dataset")
    materialize_dataset.python_func(
        ref=d["dataset"], commit=commit, content_hash=content_hash, workspace=ws, dataset=ds
    )
    assert (Path(ds.path) / "manifest.jsonl").is_file() and ds.metadata["content_hash"] == content_hash

    report = _out(dsl.Dataset, tmp_path, "check", "report")
    check.python_func(dataset=ds, config=d["check"], workspace=ws, report=report)
    assert report.metadata["kept"] == 12 and (Path(report.path) / "quarantine.jsonl").is_file()
    assert report.metadata[LINEAGE_KEY]["content_hash"] == content_hash  # lineage travels

    shards = _out(dsl.Dataset, tmp_path, "preprocess", "shards")
    preprocess.python_func(dataset=ds, config=d["preprocess"], workspace=ws, shards=shards)
    assert shards.metadata["clips"] == 12 and (Path(shards.path) / "index.json").is_file()

    vreport, docs = _out(dsl.Dataset, tmp_path, "validate", "report"), _out(dsl.HTML, tmp_path, "validate", "docs")
    assert validate.python_func(
        dataset=ds, shards=shards, config=d["validation"], workspace=ws, report=vreport, data_docs=docs
    )
    assert "<html>" in Path(docs.path).read_text()[:200].lower()
    verdict = _out(dsl.Dataset, tmp_path, "gate", "verdict")
    assert gate.python_func(report=vreport, kind="validation", stop=True, workspace=ws, verdict=verdict) is True

    # a val clip quarantined by validation: neither in the feature store nor in the catalogue (train and evaluate
    # read other splits)
    records = [json.loads(line) for line in (Path(ds.path) / "manifest.jsonl").read_text().splitlines()]
    held_out = next(r["clip_id"] for r in records if r["split"] == "val")
    with (Path(vreport.path) / "quarantine.jsonl").open("a") as fh:
        fh.write(json.dumps({"clip_id": held_out, "reasons": ["silent audio"]}) + "\n")

    published = _out(dsl.Markdown, tmp_path, "features", "published")
    features.python_func(
        dataset=ds, shards=shards, check_report=report, validation_report=vreport, config=d["features"], workspace=ws,
        published=published,
    )  # fmt: skip
    assert "clip_metadata: 11 rows" in Path(published.path).read_text()
    assert "1 quarantined clip(s) left out" in Path(published.path).read_text()

    model = _out(dsl.Model, tmp_path, "train", "model")
    train.python_func(
        shards=shards, check_report=report, validation_report=vreport, config=d["train"], launcher="local", procs=1,
        trainjob={}, workspace=ws, model=model,
    )  # fmt: skip
    assert model.metadata["step"] == 2 and (Path(model.path) / "loss_curve.png").is_file()
    assert yaml.safe_load((Path(model.path) / "train.yaml").read_text())["model"] == "tiny"

    metrics, page = _out(dsl.Metrics, tmp_path, "evaluate", "metrics"), _out(dsl.HTML, tmp_path, "evaluate", "report")
    evaluation = _out(dsl.Dataset, tmp_path, "evaluate", "evaluation")
    blessed, _ = evaluate.python_func(
        model=model, shards=shards, dataset=ds, check_report=report, config=d["evaluate"], workspace=ws,
        metrics=metrics, report=page, evaluation=evaluation, validation_report=vreport,
    )  # fmt: skip
    assert blessed is True and "retrieval/t2av/R@1" in metrics.metadata
    assert "data:image/png;base64," in Path(page.path).read_text()  # plots inlined: one self-contained page
    bverdict = _out(dsl.Dataset, tmp_path, "gate-2", "verdict")
    assert gate.python_func(report=evaluation, kind="blessing", stop=False, workspace=ws, verdict=bverdict) is True

    cat = _out(dsl.Dataset, tmp_path, "catalogue", "catalogue")
    assert (
        catalogue.python_func(
            model=model, shards=shards, check_report=report, validation_report=vreport, workspace=ws, catalogue=cat
        )
        == 11
    )

    registered = _out(dsl.Model, tmp_path, "register", "registered")
    version, repository = register.python_func(
        model=model, evaluation=evaluation, catalogue=cat, shards=shards, config=d["registry"], workspace=ws,
        registered=registered,
    )  # fmt: skip
    card = json.loads(Path(registered.path).read_text())
    assert version == 1 and repository == d["registry"]["repository"]
    assert card["lineage"]["commit"] == commit and card["lineage"]["content_hash"] == content_hash
    assert card["lineage"]["run"] == "python-func-run"

    pub = _out(dsl.Markdown, tmp_path, "publish", "published")
    publish.python_func(catalogue=cat, version=version, config=d["features"], workspace=ws, published=pub)
    assert "11 clip embeddings of version 1" in Path(pub.path).read_text()

    fetched = _out(dsl.Model, tmp_path, "fetch-version", "model")
    pre = fetch_version.python_func(repository=repository, version=version, workspace=ws, model=fetched)
    assert pre["frames"] == 2 and None not in pre.values() and (Path(fetched.path) / "model.safetensors").is_file()

    answers, manifests = (
        _out(dsl.Markdown, tmp_path, "deploy", "answers"),
        _out(dsl.Artifact, tmp_path, "deploy", "manifests"),
    )
    caption, rollout_id, phase = deploy.python_func(
        repository=repository, version=version, dataset=ds, config=d["deploy"], workspace=ws, answers=answers,
        manifests=manifests,
    )  # fmt: skip
    text = Path(answers.path).read_text()
    assert d["deploy"]["mode"] == "serve" and (rollout_id, phase) == ("", "")  # the default hand-off: serve + query
    assert isinstance(caption, str) and "**search**" in text and "1. `syn-" in text

    done = _out(dsl.Markdown, tmp_path, "summary", "summary")
    status = dsl.PipelineTaskFinalStatus("SUCCEEDED", "local", "exit-handler-1", None, None)
    summary.python_func(pipeline="pretrain", stages=["resolve", "check", "train"], workspace=ws, status=status,
                        summary=done)  # fmt: skip
    assert "| train | ran |" in Path(done.path).read_text() and done.metadata["statuses"]["check"] == "ran"

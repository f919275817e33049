"""Metrics: gauges in a private registry, the JSON-lines log, pushes to a real local Pushgateway."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from avlops.training.loop import train
from avlops.training.metrics import (
    METRIC_DATA_WAIT,
    METRIC_LOSS,
    METRIC_LR,
    METRIC_SAMPLES_PER_S,
    TrainMetrics,
    truncate_log,
)
from avlops.training.params import MetricsConfig


def _scrape(url: str) -> str:
    """What Prometheus would scrape from the Pushgateway: every pushed group's series."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_gauges_log_and_push(tmp_path: Path, pushgateway: str) -> None:
    url = pushgateway
    m = TrainMetrics(tmp_path, MetricsConfig(pushgateway=url), run="run-1")
    entry = {
        "step": 10,
        "loss": {"total": 2.5, "mga/tv": 1.0},
        "lr": {"new": 1e-4},
        "samples_per_s": 42.0,
        "data_wait_share": 0.25,
        "grad_norm": float("inf"),
    }
    m.record(entry, samples=80)
    r = m.registry
    assert r.get_sample_value(METRIC_LOSS, {"term": "total"}) == 2.5
    assert r.get_sample_value(METRIC_LOSS, {"term": "mga/tv"}) == 1.0
    assert r.get_sample_value(METRIC_LR, {"group": "new"}) == 1e-4
    assert r.get_sample_value(METRIC_SAMPLES_PER_S) == 42.0 and r.get_sample_value(METRIC_DATA_WAIT) == 0.25
    assert r.get_sample_value("avlops_train_samples_total") == 80
    assert REGISTRY.get_sample_value(METRIC_LOSS, {"term": "total"}) is None  # private registry only
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["loss"]["total"] == 2.5 and line["grad_norm"] is None  # strict JSON: inf -> null
    m.push()
    assert 'avlops_train_loss{instance="",job="avlops-train",run="run-1",term="total"} 2.5' in _scrape(url)


def test_push_failure_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = TrainMetrics(tmp_path, MetricsConfig(pushgateway="http://127.0.0.1:9"), run="r")  # nothing listens
    m.push()
    m.push()
    assert sum("could not push metrics" in rec.message for rec in caplog.records) == 1


def test_truncate_log_drops_lines_after_the_resumed_step(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))
    truncate_log(tmp_path, 3)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_run_pushes_its_metrics(tmp_path: Path, tiny_data: Path, make_cfg, pushgateway: str) -> None:
    train(make_cfg(steps=2, metrics={"pushgateway": pushgateway, "push_every": 1}), tiny_data, tmp_path, progress=False)
    body = _scrape(pushgateway)
    for name in ("avlops_train_loss", "avlops_train_learning_rate", "avlops_train_samples_per_second"):
        assert re.search(rf'^{name}{{[^}}]*job="avlops-train"', body, re.M), name
    assert re.search(r'^avlops_train_step{[^}]*job="avlops-train"[^}]*} 2$', body, re.M)
    assert re.search(r'^avlops_train_last_checkpoint_step{[^}]*job="avlops-train"[^}]*} 2$', body, re.M)

"""The Grafana dashboard: stable uid, a Prometheus datasource variable, units on every panel, and every panel's
expression accepted by a real Prometheus (Debian package) loaded with the project's rules; ``avlops monitor report``
renders a PNG per panel from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from avlops.monitoring.prometheus import PrometheusClient, PrometheusServer, rules_dir
from avlops.monitoring.report import dashboard_panels, render_report
from avlops.serving.server import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "dashboards" / "avlops-rollout.json"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusClient]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), free_port())
    server.start(envoy_admin=None, pushgateway=None, rules=rules_dir())
    try:
        yield PrometheusClient(server.url)
    finally:
        server.stop()


def test_dashboard_shape() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "avlops-rollout"
    (variable,) = data["templating"]["list"]
    assert (variable["type"], variable["query"], variable["name"]) == ("datasource", "prometheus", "datasource")
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in data["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_every_panel_expression_is_evaluated_by_prometheus(prometheus: PrometheusClient) -> None:
    panels = dashboard_panels(DASHBOARD)
    assert len(panels) >= 8
    for panel in panels:
        prometheus.query(panel.expr)  # raises PrometheusError on a bad expression
    rules = prometheus.api("rules", {})["groups"]
    assert {g["name"] for g in rules} == {"avlops-serving", "avlops-alerts"}
    assert all(r["health"] != "err" for g in rules for r in g["rules"])


def test_report_renders_a_png_per_panel(prometheus: PrometheusClient, tmp_path: Path) -> None:
    import time

    files = render_report(prometheus, DASHBOARD, tmp_path, start=time.time() - 60)
    assert len(files) == len(dashboard_panels(DASHBOARD))
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in files)

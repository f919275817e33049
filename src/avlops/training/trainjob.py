"""Multi-node training on Kubernetes: a Kubeflow Trainer v2 ``TrainJob`` that runs ``torchrun ... avlops train``.

:func:`render_trainjob` builds the manifest from a typed :class:`TrainJobSpec` (nodes, processes and resources per
node, the project's image, GPUs, node selector, tolerations, the shared data on a PVC); :func:`validate_trainjob`
checks it offline against the Trainer's published API models (``kubeflow_trainer_api``), refusing unknown fields too;
:func:`run_trainjob` submits it, reports its status as it changes, fails when the job fails, and deletes it when the
calling task is cancelled (SIGTERM). The local scale does the same with ``torchrun`` (:func:`torchrun_command`).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from pydantic import Field

from avlops.config import StrictModel

__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "TrainJobError",
    "TrainJobSpec",
    "render_trainjob",
    "run_trainjob",
    "torchrun_command",
    "validate_trainjob",
]

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NODE = "node"  # the torch-distributed runtime's replicated job and container


class TrainJobError(RuntimeError):
    """The TrainJob is invalid, failed, or could not be submitted; the message says which and why."""


class Toleration(StrictModel):
    key: str
    operator: str = Field("Exists", pattern="^(Exists|Equal)$")
    value: str | None = None
    effect: str | None = Field(None, pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")


class TrainJobSpec(StrictModel):
    """What the train task submits on a cluster."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", description="the TrainJob's name (DNS label)")
    namespace: str = "kubeflow"
    runtime: str = Field("torch-distributed", description="a ClusterTrainingRuntime with the torch ML policy")
    image: str = Field(description="the project's training image (infra/docker/train.Dockerfile)")
    num_nodes: int = Field(1, ge=1)
    procs_per_node: int = Field(1, ge=1)
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = Field(0, ge=0, description="GPUs per node (nvidia.com/gpu)")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    pvc: str = Field(description="the PersistentVolumeClaim (ReadWriteMany) that holds the data and the output")
    mount_path: str = "/mnt/avlops"
    train_args: tuple[str, ...] = Field(description="arguments of `avlops train`, paths under mount_path")
    active_deadline_s: int | None = Field(None, ge=1)


def torchrun_command(nprocs: int, train_args: Sequence[str], *, python: str = sys.executable) -> list[str]:
    """The local scale: ``torchrun`` with ``nprocs`` processes on this machine running ``avlops train``."""
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", str(nprocs),
            "-m", "avlops", "train", *train_args]  # fmt: skip


def render_trainjob(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob manifest. torchrun takes nodes, ranks and the rendezvous from the runtime's ``PET_*`` variables."""
    limits: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    pod: dict[str, Any] = {
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": spec.pvc}}],
        "containers": [{"name": NODE, "volumeMounts": [{"name": "data", "mountPath": spec.mount_path}]}],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    job: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": {"app.kubernetes.io/part-of": "avlops"}},
        "spec": {
            "runtimeRef": {"name": spec.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": spec.image,
                "command": ["torchrun", "--no-python", "avlops", "train", *spec.train_args],
                "numNodes": spec.num_nodes,
                "numProcPerNode": spec.procs_per_node,
                "resourcesPerNode": {"requests": dict(limits), "limits": limits},
                "env": [{"name": "DVC_NO_ANALYTICS", "value": "1"}],
            },
            "runtimePatches": [
                {
                    "manager": "avlops",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}]
                            }
                        }
                    },
                }
            ],
        },
    }
    if spec.active_deadline_s:
        job["spec"]["activeDeadlineSeconds"] = spec.active_deadline_s
    return job


def _unknown(given: Any, kept: Any, where: str) -> list[str]:
    """Keys of ``given`` that the API model dropped (the generated models ignore unknown fields silently)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out = [f"{where}.{k}" for k in given if k not in kept]
        for k in given.keys() & kept.keys():
            out += _unknown(given[k], kept[k], f"{where}.{k}")
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [u for i, (g, k) in enumerate(zip(given, kept, strict=False)) for u in _unknown(g, k, f"{where}[{i}]")]
    return []


def validate_trainjob(manifest: dict[str, Any]) -> None:
    """Check ``manifest`` against Kubeflow Trainer's published API models; raise :class:`TrainJobError` naming every
    bad or unknown field."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    from pydantic import ValidationError

    try:
        job = TrainerV1alpha1TrainJob.from_dict(manifest)
    except ValidationError as err:
        bad = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise TrainJobError(f"TrainJob {manifest.get('metadata', {}).get('name')!r} is invalid: {bad}") from None
    if job is None:
        raise TrainJobError("TrainJob manifest is empty")
    unknown = _unknown(manifest, job.to_dict(), "TrainJob")
    if unknown:
        raise TrainJobError(f"TrainJob has fields the Trainer API does not know: {', '.join(unknown)}")
    if manifest.get("apiVersion") != f"{GROUP}/{VERSION}" or manifest.get("kind") != "TrainJob":
        raise TrainJobError(f"not a {GROUP}/{VERSION} TrainJob: {manifest.get('apiVersion')} {manifest.get('kind')}")


def _condition(status: dict[str, Any]) -> tuple[str, str]:
    """The job's latest true condition (type, message), e.g. ("Complete", ...), ("Failed", ...), ("Created", ...)."""
    true = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    if not true:
        return "Pending", ""
    last = max(true, key=lambda c: str(c.get("lastTransitionTime", "")))
    return str(last.get("type")), str(last.get("message", ""))


def run_trainjob(
    spec: TrainJobSpec,
    *,
    api: Any = None,
    poll_s: float = 10.0,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Submit the TrainJob, wait for it while reporting each status change, and return its final status.

    Raises :class:`TrainJobError` when it fails. On SIGTERM (the pipeline task is cancelled) the job is deleted
    before the task exits. ``api`` is a ``kubernetes.client.CustomObjectsApi`` (in-cluster config when None).
    """
    manifest = render_trainjob(spec)
    validate_trainjob(manifest)
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    ns, name = spec.namespace, spec.name

    def delete(signum: int, frame: FrameType | None) -> None:
        report(f"TrainJob {ns}/{name}: task cancelled, deleting the job")
        api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, delete)
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
        report(f"TrainJob {ns}/{name} submitted: {spec.num_nodes} node(s) x {spec.procs_per_node} process(es)")
        seen = ""
        while True:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            status = obj.get("status") or {}
            state, message = _condition(status)
            if state != seen:
                report(f"TrainJob {ns}/{name}: {state}" + (f" ({message})" if message else ""))
                seen = state
            if state == "Complete":
                return dict(status)
            if state == "Failed":
                raise TrainJobError(f"TrainJob {ns}/{name} failed: {message or 'no message'}")
            time.sleep(poll_s)
    finally:
        signal.signal(signal.SIGTERM, previous)

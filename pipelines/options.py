"""How pipeline tasks run on a cluster: the image, per-task resources, the train task's GPU and node placement, the
shared PVC and the secrets. Ignored by ``kfp.local`` (it warns), compiled into the YAML's platform spec."""

from __future__ import annotations

from dataclasses import dataclass, field

from kfp import kubernetes
from kfp.dsl import PipelineTask

__all__ = ["RESOURCES", "ClusterOptions", "configure"]

# stage -> (cpu request, cpu limit, memory request, memory limit)
RESOURCES: dict[str, tuple[str, str, str, str]] = {
    "resolve": ("250m", "1", "512Mi", "1Gi"),
    "dataset": ("500m", "2", "1Gi", "4Gi"),
    "check": ("1", "2", "1Gi", "4Gi"),
    "preprocess": ("2", "8", "4Gi", "16Gi"),
    "validate": ("1", "2", "2Gi", "8Gi"),
    "gate": ("250m", "1", "512Mi", "1Gi"),
    "features": ("1", "2", "2Gi", "8Gi"),
    "train": ("4", "16", "16Gi", "64Gi"),
    "evaluate": ("2", "8", "8Gi", "32Gi"),
    "catalogue": ("2", "8", "4Gi", "16Gi"),
    "model": ("500m", "2", "2Gi", "8Gi"),
    "register": ("2", "4", "4Gi", "16Gi"),
    "publish": ("1", "2", "2Gi", "8Gi"),
    "deploy": ("2", "4", "8Gi", "16Gi"),
    "summary": ("250m", "1", "256Mi", "1Gi"),
}
# stages that talk to the network (git, the DVC remote, the feature store, the registry): retried
RETRIED = frozenset({"resolve", "dataset", "features", "register", "publish", "deploy", "model"})


@dataclass(frozen=True)
class ClusterOptions:
    image: str = "ghcr.io/avlops/avlops:0.1.0"  # infra/docker/component.Dockerfile
    pvc: str = "avlops-data"  # ReadWriteMany claim holding the registry, the feature store and TrainJob data
    mount_path: str = "/mnt/avlops"
    accelerator: str = "nvidia.com/gpu"
    gpus: int = 1
    node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: tuple[tuple[str, str], ...] = (("nvidia.com/gpu", "NoSchedule"),)
    dvc_secret: str = "avlops-dvc-remote"  # AWS_* / GOOGLE_APPLICATION_CREDENTIALS of the DVC remote
    dvc_secret_keys: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    retries: int = 3  # kfp.local runs get 0: their git repository and DVC remote are on this machine


def configure(task: PipelineTask, stage: str, opts: ClusterOptions, *, cache: bool) -> PipelineTask:
    """Resources, caching, retries, and for the stages that need them the PVC, the GPU and the secrets."""
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[stage]
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim).set_memory_request(mem_req).set_memory_limit(mem_lim)
    task.set_caching_options(cache)
    task.set_display_name(stage)
    if stage in RETRIED and opts.retries:
        task.set_retry(num_retries=opts.retries, backoff_duration="30s", backoff_factor=2.0)
    if stage in ("resolve", "dataset"):
        kubernetes.use_secret_as_env(task, opts.dvc_secret, {k: k for k in opts.dvc_secret_keys}, optional=True)
    if stage in ("train", "features", "register", "publish", "deploy", "model"):
        kubernetes.mount_pvc(task, pvc_name=opts.pvc, mount_path=opts.mount_path)
    if stage == "train":
        task.set_accelerator_type(opts.accelerator).set_accelerator_limit(opts.gpus)
        for key, value in opts.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for key, effect in opts.tolerations:
            kubernetes.add_toleration(task, key=key, operator="Exists", effect=effect)
    return task

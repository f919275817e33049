"""Training: torchrun with N processes here, or a Kubeflow Trainer TrainJob over N nodes on a cluster."""

from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def train(
    shards: Input[Dataset],
    check_report: Input[Dataset],
    validation_report: Input[Dataset],
    config: dict,
    launcher: str,
    procs: int,
    trainjob: dict,
    workspace: str,
    model: Output[Model],
) -> None:
    """Pretrain the model on the shards' train split; the run folder (checkpoint, metrics, loss curve) is the model.

    Args:
        config: the train section of params.yaml (model, batch_size, epochs, objective, optimizer, ...).
        check_report: the check step's report; its quarantined clips are not trained on.
        validation_report: the validate step's report; likewise.
        launcher: auto (a TrainJob inside Kubernetes, else local), local, or trainjob.
        procs: torchrun processes for a local run.
        trainjob: the TrainJob for a cluster run: image, pvc, num_nodes, procs_per_node, gpus, cpu, memory, ...
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    model.metadata.update(carried(shards.metadata, model.uri))
    result = steps.train(
        Path(shards.path), Path(model.path), config, reports=[Path(check_report.path), Path(validation_report.path)],
        launcher=launcher, procs=procs, trainjob=trainjob, workspace=workspace, uri=model.uri,
    )  # fmt: skip
    model.metadata.update({k: result[k] for k in ("step", "world_size", "samples_per_s", "seconds") if k in result})

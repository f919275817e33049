"""The deploy hand-off of a registered version, as params.yaml's ``deploy`` section says: ``serve`` (a local Triton
server starts, answers a search and a caption over gRPC, and stops) or ``rollout`` (a canary rollout of the version
on the local rollout platform; the cluster's Argo Rollout update rendered as ``manifests``)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components import component


@component
def deploy(
    repository: str,
    version: int,
    dataset: Input[Dataset],
    config: dict,
    workspace: str,
    answers: Output[Markdown],
    manifests: Output[Artifact],
) -> NamedTuple("Deployed", [("caption", str), ("rollout_id", str), ("rollout_phase", str)]):
    """Serve and query the version, or start its rollout; returns the caption (serve) or the rollout's id and phase.

    Args:
        repository: the registry folder.
        version: the registered version to hand off.
        config: the deploy section of params.yaml (mode serve | rollout, target, workdir, spec, probe).
    """
    from pathlib import Path

    from avlops.flow import steps

    result = steps.deploy(
        repository, version, Path(dataset.path), Path(answers.path), config, Path(manifests.path),
        workspace=workspace, uri=answers.uri,
    )  # fmt: skip
    answers.metadata.update({k: v for k, v in result.items() if k != "hits"})
    return str(result["caption"]), str(result["rollout_id"]), str(result["rollout_phase"])

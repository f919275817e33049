"""The dataset stage: pin a DVC reference to a commit (never cached), then materialise that version (cached)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Output

from components import component


@component
def resolve_dataset(ref: dict, workspace: str, pinned: Output[Artifact]) -> NamedTuple(
    "Pinned", [("commit", str), ("content_hash", str)]
):
    """Resolve the dataset reference's revision to a git commit and DVC's content hash.

    Args:
        ref: repo (git URL or path), path (the dataset folder in it), rev, remote_url, remote_name.
        workspace: the run's shared workspace (the run ledger).
    """
    from avlops.flow import steps
    from avlops.flow.lineage import LINEAGE_KEY

    lineage = steps.resolve(ref, workspace=workspace, uri=pinned.uri)
    pinned.metadata[LINEAGE_KEY] = lineage.to_dict()
    with open(pinned.path, "w", encoding="utf-8") as fh:
        fh.write(f"{lineage.repo} {lineage.path} {lineage.commit} {lineage.content_hash}\n")
    return lineage.commit, lineage.content_hash


@component
def materialize_dataset(
    ref: dict,
    commit: str,
    content_hash: str,
    workspace: str,
    dataset: Output[Dataset],
) -> None:
    """Copy the pinned dataset version out of DVC (cache or remote) into the dataset artifact."""
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import LINEAGE_KEY

    lineage = steps.materialize(ref, commit, content_hash, Path(dataset.path), workspace=workspace, uri=dataset.uri)
    dataset.metadata.update({LINEAGE_KEY: lineage.to_dict(), "commit": commit, "content_hash": content_hash})

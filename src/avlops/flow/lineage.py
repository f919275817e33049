"""Lineage: which dataset version (DVC reference, git commit, content hash) and which pipeline run made an artifact.

A :class:`Lineage` is created by the dataset step, copied into the metadata of every later artifact, the model card and
the registry version, so a registered model names the exact data it was trained on and the run that registered it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import PurePosixPath
from typing import Any

__all__ = ["LINEAGE_KEY", "Lineage", "carried", "run_key"]

LINEAGE_KEY = "avlops_lineage"  # the key under which artifact metadata holds the lineage mapping


@dataclass(frozen=True)
class Lineage:
    """Where a dataset came from and which run used it."""

    repo: str  # the DVC repository: a git URL or a local path
    path: str  # the dataset's path inside that repository
    rev: str  # the revision the user asked for (branch, tag, commit)
    commit: str  # the git commit that revision resolved to
    content_hash: str  # DVC's hash of the dataset (md5 of the output's listing)
    remote: str = ""  # the DVC remote read from ("" = the one configured at that revision)
    run: str = ""  # the pipeline run that produced the artifact carrying this lineage

    def with_run(self, run: str) -> Lineage:
        return replace(self, run=run)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Lineage:
        """The lineage in an artifact's metadata; a clear error when the artifact carries none."""
        raw = metadata.get(LINEAGE_KEY)
        if not isinstance(raw, dict):
            raise ValueError(
                f"the input artifact carries no {LINEAGE_KEY!r} metadata: was it made by the dataset step?"
            )
        fields = {k: str(raw.get(k, "")) for k in cls.__dataclass_fields__}
        return cls(**fields)


def run_key(artifact_uri: str) -> str:
    """The pipeline run an output artifact belongs to, read from its URI.

    kfp.local lays outputs out as ``<pipeline_root>/<run>/<task>/<output>``; a Kubeflow cluster as
    ``<pipeline_root>/<pipeline>/<run uuid>/<task>/<execution>/<output>``. Reading the run from the URI (instead of a
    run-id parameter) keeps the run out of the task's cache key, so deterministic steps still cache across runs.
    """
    parts = PurePosixPath(artifact_uri.split("://", 1)[-1]).parts
    for part in parts:
        if len(part) == 36 and part.count("-") == 4:  # a cluster run's uuid
            return part
    return parts[-3] if len(parts) >= 3 else ""


def carried(metadata: dict[str, Any], uri: str) -> dict[str, Any]:
    """Artifact metadata for an output at ``uri`` made from an input whose metadata is ``metadata``: the input's
    dataset lineage, with the run that made the output."""
    lineage = Lineage.from_metadata(metadata).with_run(run_key(uri))
    return {LINEAGE_KEY: lineage.to_dict(), "dataset_commit": lineage.commit, "pipeline_run": lineage.run}

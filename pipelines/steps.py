"""Wiring shared by the pipelines: the dataset's first steps, and a registered version's model and shards."""

from __future__ import annotations

from typing import Any

from kfp.dsl import PipelineTask

from components.check import check
from components.dataset import materialize_dataset, resolve_dataset
from components.preprocess import preprocess
from components.register import fetch_version
from pipelines.options import ClusterOptions, configure

__all__ = ["checked_dataset", "version_on_dataset"]


def checked_dataset(dataset: Any, check_config: Any, ws: str, opts: ClusterOptions) -> tuple[Any, PipelineTask]:
    """resolve (never cached) -> dataset (cached on the pinned commit and hash) -> check; returns the dataset
    artifact and the check task."""
    pin = configure(resolve_dataset(ref=dataset, workspace=ws), "resolve", opts, cache=False)
    data = materialize_dataset(
        ref=dataset, commit=pin.outputs["commit"], content_hash=pin.outputs["content_hash"], workspace=ws
    )
    ds = configure(data, "dataset", opts, cache=True).outputs["dataset"]
    checked = configure(check(dataset=ds, config=check_config, workspace=ws), "check", opts, cache=True)
    return ds, checked


def version_on_dataset(
    repository: Any, version: Any, ds: Any, checked: PipelineTask, ws: str, opts: ClusterOptions
) -> tuple[Any, Any]:
    """A registered version as a model, and the dataset preprocessed as that version was trained: (model, shards)."""
    fetched = configure(fetch_version(repository=repository, version=version, workspace=ws), "model", opts, cache=False)
    pre = preprocess(dataset=ds, config=fetched.outputs["Output"], workspace=ws).after(checked)
    shards = configure(pre, "preprocess", opts, cache=True).outputs["shards"]
    return fetched.outputs["model"], shards

"""The pipelines by name, built from their defaults and cluster options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp.dsl import base_component

from pipelines import catalogue_refresh, evaluate, pretrain
from pipelines.options import ClusterOptions

__all__ = ["BUILDERS", "STAGES", "TASKS", "build_pipeline", "task_name"]

BUILDERS: dict[str, Callable[[dict[str, Any], ClusterOptions], base_component.BaseComponent]] = {
    "pretrain": pretrain.build,
    "evaluate": evaluate.build,
    "catalogue_refresh": catalogue_refresh.build,
}
STAGES: dict[str, list[str]] = {
    "pretrain": pretrain.STAGES,
    "evaluate": evaluate.STAGES,
    "catalogue_refresh": catalogue_refresh.STAGES,
}

# the kfp task of each stage where its name is not the stage's (component names; a second use gets "-2")
TASKS: dict[str, str] = {
    "resolve": "resolve-dataset",
    "dataset": "materialize-dataset",
    "gate-validation": "gate",
    "gate-blessing": "gate-2",
    "model": "fetch-version",
}


def task_name(pipeline: str, stage: str) -> str:
    if pipeline != "pretrain" and stage == "gate-blessing":
        return "gate"  # the evaluate pipeline's only gate
    return TASKS.get(stage, stage)


def build_pipeline(name: str, defaults: dict[str, Any], opts: ClusterOptions) -> base_component.BaseComponent:
    if name not in BUILDERS:
        raise KeyError(f"pipeline {name!r}: expected one of {', '.join(BUILDERS)}")
    return BUILDERS[name](defaults, opts)

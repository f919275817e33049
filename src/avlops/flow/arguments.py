"""Pipeline parameters from ``params.yaml``: the same sections, less the paths that artifacts replace.

A pipeline takes one mapping per stage section (``check``, ``preprocess``, ...), validated by the same typed config
the stage's CLI command uses, so a bad value is refused before any task starts, with the parameter and the key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avlops.config import ConfigError, StrictModel, build
from avlops.data.params import CheckConfig
from avlops.evaluation.params import EvaluateConfig
from avlops.features.params import FeaturesConfig
from avlops.flow.dataset import DatasetRef
from avlops.params import ProjectParams
from avlops.preprocessing.params import PreprocessConfig
from avlops.registry.params import RegisterConfig
from avlops.rollout.params import DeployConfig
from avlops.training.params import TrainConfig
from avlops.training.trainjob import TrainJobSpec
from avlops.validation.params import ValidateConfig

__all__ = ["SECTIONS", "pipeline_defaults", "section_arguments", "validate_arguments", "without_none"]

# pipeline parameter -> (its config model, the keys the pipeline fills in from artifacts)
SECTIONS: dict[str, tuple[type[StrictModel], tuple[str, ...]]] = {
    "check": (CheckConfig, ("manifest", "report_dir")),
    "preprocess": (PreprocessConfig, ("manifest", "out")),
    "validation": (ValidateConfig, ("manifest", "stats", "out")),
    "features": (FeaturesConfig, ("manifest", "stats", "quarantine")),
    "train": (TrainConfig, ("data", "out", "quarantine")),
    "evaluate": (EvaluateConfig, ("checkpoint", "data", "manifest", "out", "quarantine")),
    "registry": (RegisterConfig, ("checkpoint", "eval_dir", "data", "catalogue", "quarantine")),
    "deploy": (DeployConfig, ()),
}
# what lives outside the run (stores, the rollout platform, its spec): always named, made absolute
_LOCATIONS = {"features": ("repo_dir",), "registry": ("repository",), "deploy": ("workdir", "spec")}


def without_none(value: Any) -> Any:
    """Pipeline parameters cannot hold null (KFP's types are str, int, float, bool, dict, list): a None in a config
    means "the default", so the key is left out."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def section_arguments(params: ProjectParams, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Each stage section of ``params`` as a pipeline argument: artifact paths dropped; with ``root``, the stores'
    relative locations made absolute (tasks run in other working folders)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (model, filled) in SECTIONS.items():
        section = getattr(params, name)
        dumped = section.model_dump(mode="json", exclude_unset=True)  # what params.yaml sets; the rest: defaults
        values = without_none(dumped)
        if build(model, values, name) != build(model, dumped, name):
            raise ConfigError(
                f"[{name}]: a null that is not the default cannot be a pipeline parameter (KFP parameters hold no "
                "null): write the setting out instead (bless.defaults: {enabled: false} for bless.defaults: null)"
            )
        values = {k: v for k, v in values.items() if k not in filled}
        for key in _LOCATIONS.get(name, ()):  # outside the run: always named, absolute when a root is given
            values[key] = str(getattr(section, key))
            if root is not None and "://" not in values[key]:
                values[key] = str((root / values[key]).resolve())
        out[name] = values
    return out


def validate_arguments(arguments: dict[str, Any]) -> None:
    """Refuse a bad pipeline argument before anything runs; the error names the parameter and the key."""
    problems: list[str] = []
    for name, value in arguments.items():
        if name in SECTIONS:
            model, filled = SECTIONS[name]
            if not isinstance(value, dict):
                problems.append(f"parameter {name}: expected a mapping, got {type(value).__name__}")
                continue
            stray = sorted(set(value) & set(filled))
            if stray:
                problems.append(f"parameter {name}: {', '.join(stray)}: set by the pipeline from its artifacts")
            try:
                build(model, value, f"parameter {name}")
            except ConfigError as err:
                problems.append(str(err))
        elif name == "dataset":
            try:
                build(DatasetRef, value if isinstance(value, dict) else {}, "parameter dataset")
            except ConfigError as err:
                problems.append(str(err))
        elif name == "trainjob" and value:
            try:
                build(TrainJobSpec, {"name": "check", "train_args": (), **value}, "parameter trainjob")
            except ConfigError as err:
                problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))


def pipeline_defaults(
    params: ProjectParams,
    root: Path,
    *,
    dataset: DatasetRef | None = None,
    trainjob: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every pipeline parameter's default: the stage sections of ``params``, the dataset (default: the project's own
    ``synth.out`` at ``HEAD`` of ``root``, read through the DVC remote of ``[versioning]``), the registry folder, and
    the TrainJob settings."""
    if dataset is None:
        remote = params.versioning.remote_url
        if "://" not in remote:
            remote = str((root / remote).resolve())
        dataset = DatasetRef(
            repo=str(root), path=params.synth.out, rev="HEAD", remote_url=remote,
            remote_name=params.versioning.remote_name,
        )  # fmt: skip
    sections = section_arguments(params, root)
    return {
        **sections,
        "dataset": dataset.model_dump(mode="json"),
        "repository": sections["registry"]["repository"],
        "trainjob": dict(trainjob or {}),
    }

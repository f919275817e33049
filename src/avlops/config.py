"""Typed, frozen configuration shared by the CLI, DVC's ``params.yaml`` and pipeline parameters.

Every stage owns one section model. Values live in YAML and are loaded once at the edge (the CLI or a component);
unknown keys and wrong types are rejected with the offending key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "StrictModel", "load_section", "load_yaml", "override"]


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and the key."""


class StrictModel(BaseModel):
    """Base for every config section: immutable, typed, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


M = TypeVar("M", bound=StrictModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or a non-mapping document."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _explain(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<root>"
        lines.append(f"{where}: {key}: {str(e['msg']).removeprefix('Value error, ')}")
    return "\n".join(lines)


def build(model: type[M], values: dict[str, Any], where: str = "config") -> M:
    """Validate ``values`` into ``model``; errors name every bad key."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_explain(err, where)) from err


def load_section(path: str | Path | None, section: str | None, model: type[M]) -> M:
    """Load ``model`` from ``path`` (whole file when ``section`` is None, else that top-level key).

    ``path=None`` gives the model's defaults.
    """
    if path is None:
        return build(model, {}, model.__name__)
    data = load_yaml(path)
    if section is not None:
        data = data.get(section, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: {section}: expected a mapping")
    return build(model, data, f"{path}" + (f" [{section}]" if section else ""))


def override(cfg: M, **changes: Any) -> M:
    """Return ``cfg`` with the non-None ``changes`` applied (CLI flags over file values), re-validated."""
    updates = {k: v for k, v in changes.items() if v is not None}
    if not updates:
        return cfg
    return build(type(cfg), {**cfg.model_dump(), **updates}, type(cfg).__name__)

"""A training checkpoint back into a model and the objective it was trained with, for evaluation.

A checkpoint folder (``<run>/checkpoints/step-N/``, see :mod:`avlops.training.checkpoint`) holds ``model.safetensors``
and ``model_config.json``, so it alone rebuilds the model. How the model scores (fine or coarse similarity, token
weights, the logit-scale cap) and decodes (caption style) is the objective: it comes from the run's ``config.json``
two levels up, or, for a checkpoint copied on its own, from the ``compat`` record in its ``meta.json``. The optimizer
state (``state.pt``) is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_weights

from avlops.config import ConfigError
from avlops.fileio import read_json_object
from avlops.models.vla import VLAConfig, VLAModel
from avlops.objective import ObjectiveConfig
from avlops.training.checkpoint import (
    CHECKPOINT_DIR,
    META_NAME,
    MODEL_CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    IncompatibleCheckpointError,
    latest_checkpoint,
)
from avlops.training.loop import CONFIG_NAME

__all__ = ["LoadedModel", "load_for_evaluation", "resolve_checkpoint", "resolve_device"]


@dataclass(frozen=True)
class LoadedModel:
    model: VLAModel  # in eval mode, on ``device``
    objective: ObjectiveConfig
    path: Path  # the checkpoint folder
    step: int | None
    device: torch.device


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for ``path``: a checkpoint folder itself, or the newest one of a run folder or of its
    ``checkpoints`` folder. Raises FileNotFoundError naming what is missing."""
    p = Path(path)
    if (p / WEIGHTS_NAME).is_file():
        return p
    for root in (p / CHECKPOINT_DIR, p):
        found = latest_checkpoint(root)
        if found is not None:
            return found.path
    if not p.exists():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    raise FileNotFoundError(
        f"{p}: not a checkpoint (no {WEIGHTS_NAME}) and no checkpoints/step-* folder under it; "
        "give a training run folder or one of its checkpoints/step-N folders"
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
    return device


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, what="checkpoint file", error=CheckpointError, hint=" (an incomplete checkpoint?)")


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _objective(folder: Path) -> ObjectiveConfig:
    run_config = folder.parent.parent / CONFIG_NAME
    if run_config.is_file():
        data = _read_json(run_config).get("objective")
        where = str(run_config)
    else:  # a checkpoint folder copied on its own: the objective is in meta.json's compat record, flattened
        compat = _read_json(folder / META_NAME).get("compat", {})
        objective = {k.removeprefix("objective."): v for k, v in compat.items() if k.startswith("objective.")}
        data = _unflatten(objective) if objective else None
        where = str(folder / META_NAME)
    if data is None:
        raise CheckpointError(f"{where}: no training objective recorded, so how the model scores is unknown")
    try:
        return ObjectiveConfig.from_dict(data)
    except ValueError as err:
        raise CheckpointError(f"{where}: objective: {err}") from err


def load_for_evaluation(path: str | Path, device: str = "auto") -> LoadedModel:
    """Rebuild the model of a checkpoint (or of a run's newest checkpoint), load its weights strictly, eval mode."""
    folder = resolve_checkpoint(path)
    try:
        cfg = VLAConfig.from_dict(_read_json(folder / MODEL_CONFIG_NAME))
    except ValueError as err:
        raise CheckpointError(f"{folder / MODEL_CONFIG_NAME}: {err}") from err
    objective = _objective(folder)
    dev = resolve_device(device)
    model = VLAModel(cfg)
    try:
        missing, unexpected = load_weights(model, str(folder / WEIGHTS_NAME), strict=False, device=str(dev))
    except RuntimeError as err:
        shapes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        if shapes:
            more = f" and {len(shapes) - 3} more" if len(shapes) > 3 else ""
            raise IncompatibleCheckpointError(
                f"{folder}: weights do not fit {MODEL_CONFIG_NAME}: " + "; ".join(shapes[:3]) + more
            ) from None
        raise CheckpointError(f"{folder / WEIGHTS_NAME}: unreadable weights: {err}") from err
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / WEIGHTS_NAME}: unreadable weights: {err}") from err
    if missing or unexpected:
        raise IncompatibleCheckpointError(
            f"{folder}: weights do not fit {MODEL_CONFIG_NAME} (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]})"
        )
    meta = _read_json(folder / META_NAME) if (folder / META_NAME).is_file() else {}
    step = meta.get("step") if isinstance(meta.get("step"), int) else None
    return LoadedModel(model.to(dev).eval(), objective, folder, step, dev)

"""A registered version back as a checkpoint folder, so it can be evaluated or encode a new catalogue without the
training run that made it (which a cluster may long have deleted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from avlops.registry.store import Registry
from avlops.serving.bundle import WEIGHTS_NAME, ServingBundle
from avlops.serving.contract import CAPTION_DECODER

__all__ = ["export_checkpoint"]


def _flatten(data: Any, prefix: str) -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flatten(value, f"{prefix}.{key}").items()}
    return {prefix: data}


def export_checkpoint(repository: Path, version: int, dest: Path) -> Path:
    """Write ``version``'s weights, model config and objective to ``dest`` as a checkpoint folder; returns ``dest``.

    The folder loads with :func:`avlops.evaluation.checkpoint.load_for_evaluation` like a training checkpoint.
    """
    registry = Registry(repository)
    if version not in registry.versions():
        raise FileNotFoundError(f"{repository}: no version {version} (registered: {registry.versions() or 'none'})")
    folder = registry.models / CAPTION_DECODER / str(version)  # holds the weights and the serving bundle
    bundle = ServingBundle.read(folder)
    card = registry.card(version)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(folder / WEIGHTS_NAME, dest / WEIGHTS_NAME)
    (dest / "model_config.json").write_text(json.dumps(bundle.model, indent=1) + "\n", encoding="utf-8")
    meta = {
        "step": card.get("checkpoint", {}).get("step"),
        "compat": _flatten(bundle.objective, "objective"),
        "registered_version": version,
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return dest

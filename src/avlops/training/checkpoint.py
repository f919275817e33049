"""Atomic, resumable training checkpoints.

One folder per checkpoint, ``<out>/checkpoints/step-XXXXXXXX/``:

    model.safetensors   the model's weights (tied weights stored once); nothing is unpickled to read them
    state.pt            optimizer, scheduler, RNG and sampler state: tensors and plain values only, read back with
                        ``torch.load(weights_only=True)``
    model_config.json   the VLAConfig, so the folder alone rebuilds the model (evaluation, export)
    meta.json           step, losses, the config fields a resuming run must share (``compat``) and the data fingerprint

The folder is written under a hidden temporary name, every file fsynced, then renamed into place in one step, so a
visible ``step-*`` folder is always complete; a crash, a kill or a full disk (ENOSPC) leaves only a hidden temporary
folder, removed on the next save, and the checkpoints written before are untouched. Old checkpoints are deleted only
after a new one is in place (``keep_last``).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from avlops.fileio import read_json_object

__all__ = [
    "CHECKPOINT_DIR",
    "Checkpoint",
    "CheckpointError",
    "IncompatibleCheckpointError",
    "check_compatible",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.pt"
META_NAME = "meta.json"
MODEL_CONFIG_NAME = "model_config.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read."""


class IncompatibleCheckpointError(CheckpointError):
    """A checkpoint was written by a run whose config or data differs from this one's."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    def meta(self) -> dict[str, Any]:
        return read_json_object(self.path / META_NAME, what=META_NAME, error=CheckpointError, missing=CheckpointError)


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """The complete checkpoints under ``root`` (``<out>/checkpoints``), oldest first."""
    if not root.is_dir():
        return []
    found = [Checkpoint(p, int(m.group(1))) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch, as tensors and plain numbers (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy tuple form: (name, uint32 keys, pos, has_gauss, cached)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))


# ------------------------------------------------------------------------------------------------------ writing


def _fsync(path: Path) -> None:
    """fsync a file (errors propagate) or a folder (best effort: not every filesystem allows it)."""
    is_file = path.is_file()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if is_file:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if is_file:
            raise
    finally:
        os.close(fd)


def _write_weights(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
    save_model(model, str(path), metadata=metadata)  # drops the duplicate names of tied weights


def _write_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    meta: dict[str, Any],
    model_config: dict[str, Any],
    keep_last: int,
) -> Checkpoint:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep_last``.

    Raises :class:`CheckpointError` when the folder cannot be written (a full disk included); the earlier checkpoints
    are then untouched and no partial folder is visible.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    if final.is_dir():  # written before (a resumed run stopping where it started): complete by construction
        return Checkpoint(final, step)
    for stale in root.glob(".step-*.tmp*"):  # left by a crash or a failed write; one writer per folder (run lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=root))
    try:
        _write_weights(tmp / WEIGHTS_NAME, model, {"step": str(step), "format": "avlops.vla"})
        _write_state(tmp / STATE_NAME, {"format_version": FORMAT_VERSION, "step": step, **state})
        _write_json(tmp / MODEL_CONFIG_NAME, model_config)
        _write_json(tmp / META_NAME, {"format_version": FORMAT_VERSION, "step": step, **meta})
        for name in (WEIGHTS_NAME, STATE_NAME, MODEL_CONFIG_NAME, META_NAME):
            (tmp / name).chmod(0o644)
            _fsync(tmp / name)
        tmp.chmod(0o755)  # mkdtemp makes it private; evaluation and export jobs read checkpoints too
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            why = "the disk is full" if err.errno == errno.ENOSPC else str(err)
            last = latest_checkpoint(root)
            kept = f"the last good checkpoint {last.path} is intact" if last else "no earlier checkpoint exists"
            raise CheckpointError(f"checkpoint step {step} could not be written to {root}: {why}; {kept}") from err
        raise
    for old in list_checkpoints(root)[:-keep_last]:
        trash = old.path.with_name(f".{old.path.name}.tmp-deleting")
        os.replace(old.path, trash)  # out of sight first: a crash mid-delete leaves no half checkpoint visible
        shutil.rmtree(trash, ignore_errors=True)
    return Checkpoint(final, step)


# ------------------------------------------------------------------------------------------------------ reading


def check_compatible(ckpt: Checkpoint, compat: dict[str, Any], data_fingerprint: str | None) -> dict[str, Any]:
    """Refuse a checkpoint written under another config or other data; returns its meta."""
    meta = ckpt.meta()
    if meta.get("format_version") != FORMAT_VERSION:
        raise IncompatibleCheckpointError(f"{ckpt.path}: format {meta.get('format_version')!r}, expected 1")
    theirs: dict[str, Any] = meta.get("compat", {})
    diffs = [
        f"{k}: {theirs.get(k, '<unset>')!r} in the checkpoint, {compat.get(k, '<unset>')!r} now"
        for k in sorted(set(theirs) | set(compat))
        if theirs.get(k, "<unset>") != compat.get(k, "<unset>")
    ]
    if diffs:
        shown = "\n  ".join(diffs[:12]) + (f"\n  ... and {len(diffs) - 12} more" if len(diffs) > 12 else "")
        raise IncompatibleCheckpointError(
            f"{ckpt.path} was written by an incompatible config:\n  {shown}\n"
            "resume with the config it was written with, or train into a new --out folder"
        )
    if data_fingerprint is not None and meta.get("data_fingerprint") != data_fingerprint:
        raise IncompatibleCheckpointError(
            f"{ckpt.path} was trained on other data (fingerprint {meta.get('data_fingerprint')}, now "
            f"{data_fingerprint}); its sample order would not continue. Train into a new --out folder"
        )
    return meta


def load_checkpoint(ckpt: Checkpoint, model: nn.Module, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load the weights into ``model`` (strictly) and return the training state (optimizer, scheduler, RNG, ...)."""
    try:
        missing, unexpected = load_model(model, str(ckpt.path / WEIGHTS_NAME), strict=False, device=str(map_location))
        state: dict[str, Any] = torch.load(ckpt.path / STATE_NAME, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{ckpt.path}: unreadable checkpoint: {err}") from err
    if missing or unexpected:
        raise IncompatibleCheckpointError(
            f"{ckpt.path}: weights do not fit the model (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]})"
        )
    return state

"""The model card of a registered version: where the model came from and why it may be served.

``card.json`` records the registry version and time; the checkpoint (path, step, sha256 of its weights) and its run's
training config; the code revision (git commit, branch, whether the tree had changes); the data version (the DVC
``dvc.lock`` hashes of the pipeline's outputs, and the one of the data the model was trained on); the model,
objective, preprocessing and serving configs; the evaluation's metrics and blessing verdict; the export parity
results; the catalogue; and the models of the repository. ``avlops registry show`` prints it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

__all__ = ["code_revision", "data_version", "find_upwards"]


def find_upwards(start: Path, name: str) -> Path | None:
    """``name`` in ``start`` or the nearest folder above it."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / name).exists():
            return folder / name
    return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_revision(root: Path) -> dict[str, Any]:
    """The git commit of ``root``'s checkout, its branch, and whether tracked files had changes (``dirty``)."""
    commit = _git(["rev-parse", "HEAD"], root)
    if commit is None:
        return {"commit": None, "note": "not a git checkout"}
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return {
        "commit": commit,
        "branch": _git(["rev-parse", "--abbrev-ref", "HEAD"], root),
        "dirty": bool(status),
    }


def data_version(root: Path, data_path: str | None) -> dict[str, Any]:
    """The DVC view of the data: every output of ``dvc.lock`` (path → md5), and ``data`` = the entry for
    ``data_path`` (the folder the model was trained on) when the lock file tracks it.

    ``version`` is a short hash of all outputs: it changes whenever any pipeline output does.
    """
    lock = find_upwards(root, "dvc.lock")
    if lock is None:
        return {"dvc_lock": None, "note": "no dvc.lock: the data is not versioned by DVC here"}
    try:
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    except (OSError, yaml.YAMLError) as err:
        return {"dvc_lock": str(lock), "note": f"unreadable dvc.lock: {err}"}
    outs: dict[str, str] = {}
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            if isinstance(out, dict) and "path" in out:
                outs[str(out["path"])] = str(out.get("md5", ""))
    digest = hashlib.sha256(json.dumps(outs, sort_keys=True).encode()).hexdigest()[:16]
    data = None
    if data_path is not None:
        try:
            rel = str(Path(data_path).resolve().relative_to(lock.parent.resolve()))
        except ValueError:
            rel = data_path
        data = {"path": rel, "md5": outs.get(rel)} if rel in outs else {"path": rel, "md5": None}
    return {"dvc_lock": str(lock), "version": digest, "outs": outs, "data": data}

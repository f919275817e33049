"""A throw-away avlops project at the tests' tiny scale: what the pipeline and demo tests build their projects from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY: dict[str, dict[str, object]] = {
    "synth": {"clips": 12, "seconds": 1.0, "fps": 4, "size": 32, "workers": 1, "test_fraction": 0.4},
    "preprocess": {"model": "tiny", "frames": 2, "eval_frames": 2, "workers": 1, "shard_size": 4},
    # a 2-step model is not well above chance: the shipped checks off ({enabled: false}: a pipeline parameter cannot
    # be null), one threshold keeps the gate closed-safe
    "evaluate": {"beam_size": 1, "max_caption_len": 6,
                 "bless": {"defaults": {"enabled": False},
                           "thresholds": {"retrieval/t2av/R@1": {"min": 0.0}}}},
    "train": {"model": "tiny", "steps": 2, "epochs": None, "batch_size": 4, "num_workers": 0, "checkpoint_every": 2,
              "metrics": {"log_every": 1}},
}  # fmt: skip
ENV = {
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "avlops test",
    "GIT_AUTHOR_EMAIL": "test@avlops.invalid",
    "GIT_COMMITTER_NAME": "avlops test",
    "GIT_COMMITTER_EMAIL": "test@avlops.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def scaffold(root: Path, overrides: dict[str, dict[str, object]] | None = None) -> Path:
    """``root`` with this repository's DVC set-up, the code its stages depend on, and params.yaml at tiny scale
    (``overrides`` merged over :data:`TINY`, section by section)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    for code in ("src", "configs"):  # the stages' code deps
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in {**TINY, **(overrides or {})}.items():
        params[section] = {**params[section], **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root

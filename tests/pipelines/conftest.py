"""A throw-away avlops project with a tiny DVC-versioned synthetic dataset committed at HEAD and pushed to a local
remote: the dataset reference the pipeline tests run on. Real git, DVC and ``avlops data synth``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dvc.repo  # noqa: F401 - DVC's log handlers bound at collection, not inside a captured test
import pytest
import yaml

from avlops.data.params import VersioningConfig
from avlops.data.versioning import push, repro

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "synth": {"clips": 12, "seconds": 1.0, "fps": 4, "size": 32, "workers": 1, "test_fraction": 0.4},
    "check": {"max_bad_fraction": 0.0},
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


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def make_project(root: Path, overrides: dict[str, dict[str, object]] | None = None) -> Path:
    """A project folder: dvc.yaml, .dvc, the code the synth stage depends on, tiny params.yaml; the dataset made by
    ``dvc repro synth``, pushed to ``.dvc-storage`` and committed."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    for code in ("src", "configs"):
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in {**TINY, **(overrides or {})}.items():
        params[section] = {**params[section], **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(root, "init", "-q", "-b", "main")
    repro(root, ["synth"])
    push(root, VersioningConfig(), ["synth"])
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tiny dataset")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny project; the working folder is its root while the module's tests run."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        root = make_project(tmp_path_factory.mktemp("pipeline") / "project")
        mp.chdir(root)
        yield root

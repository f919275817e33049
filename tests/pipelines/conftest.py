"""A throw-away avlops project with a tiny DVC-versioned synthetic dataset committed at HEAD and pushed to a local
remote: the dataset reference the pipeline tests run on. Real git, DVC and ``avlops data synth``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dvc.repo  # noqa: F401 - DVC's log handlers bound at collection, not inside a captured test
import pytest

from avlops.data.params import VersioningConfig
from avlops.data.versioning import push, repro
from tiny_project import ENV, scaffold

# the pipeline tests check with no bad clip allowed
CHECK = {"check": {"max_bad_fraction": 0.0}}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def make_project(root: Path, overrides: dict[str, dict[str, object]] | None = None) -> Path:
    """A project folder: dvc.yaml, .dvc, the code the synth stage depends on, tiny params.yaml; the dataset made by
    ``dvc repro synth``, pushed to ``.dvc-storage`` and committed."""
    scaffold(root, {**CHECK, **(overrides or {})})
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

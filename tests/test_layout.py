"""The promised top-level layout: components/, pipelines/ and serving/ are installed packages, and no script folder
of the repository has a module of the same name that would shadow them when a script runs from it."""

from __future__ import annotations

import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "pipelines", "serving")


def test_the_top_level_folders_are_packages_of_this_repository() -> None:
    for name in PACKAGES:
        module = importlib.import_module(name)
        assert module.__file__ == str(REPO / name / "__init__.py"), name
    from avlops.serving.model_repository import model_py

    assert "TritonPythonModel" in model_py()  # the Triton template, read from serving/


def test_no_script_folder_shadows_them() -> None:
    for folder in ("bench", "tests", "infra", "configs"):
        for name in PACKAGES:
            assert not (REPO / folder / f"{name}.py").exists(), f"{folder}/{name}.py would shadow the {name} package"

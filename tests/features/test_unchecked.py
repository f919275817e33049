"""Feast is imported without typeguard's instrumentation by every avlops module that uses it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("module", ["avlops.features.store", "avlops.features.embeddings"])
def test_the_store_modules_import_feast_without_typeguard(module: str) -> None:
    code = f"import {module}, avlops.features.unchecked as u; print(u.feast_instrumented())"
    assert _fresh(code) == "False"  # feast_instrumented() is True only once feast was imported with the checks


def test_feast_imported_first_keeps_its_checks() -> None:
    # nothing is changed after the fact: the classes Feast already built keep typeguard's checks
    assert _fresh("import feast, avlops.features.unchecked as u; print(u.feast_instrumented())") == "True"

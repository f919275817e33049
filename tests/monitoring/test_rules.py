"""The recording and alerting rules under infra/prometheus pass ``promtool check rules`` and their promtool unit
tests, and the unit tests do catch a wrong rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: ./run setup installs the Debian prometheus package")
    return found


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    rules = sorted((INFRA / "rules").glob("*.yml"))
    tests = sorted((INFRA / "tests").glob("*.yml"))
    assert rules and tests
    check = subprocess.run([_promtool(), "check", "rules", *map(str, rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run([_promtool(), "test", "rules", *map(str, tests)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = (INFRA / "rules" / "avlops.yml").read_text()
    assert 'avlops:grpc_error_ratio:rate30s{track="canary"} > 0.05' in text
    (tmp_path / "rules" / "avlops.yml").write_text(
        text.replace(
            'avlops:grpc_error_ratio:rate30s{track="canary"} > 0.05',
            'avlops:grpc_error_ratio:rate30s{track="canary"} > 0.5',
        )
    )
    shutil.copy(INFRA / "tests" / "avlops_test.yml", tmp_path / "tests")
    done = subprocess.run(
        [_promtool(), "test", "rules", str(tmp_path / "tests" / "avlops_test.yml")], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "AvlopsCanaryErrors" in done.stdout + done.stderr

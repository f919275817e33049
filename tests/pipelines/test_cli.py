"""``avlops pipeline``'s refusals that need no run: --host without a reachable dataset URL or server, a missing
version, and --help that explains."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from avlops.cli import main

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_submitting_needs_a_dataset_url_the_cluster_can_reach(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["pipeline", "run", "pretrain", "--host", "http://127.0.0.1:9", "--params", str(REPO / "params.yaml")]
    assert main(args) == 2
    assert "--host: the dataset repo must be a git URL the cluster can reach" in capsys.readouterr().err


def test_an_unreachable_server_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    args = ["pipeline", "run", "pretrain", "--host", host, "--params", str(REPO / "params.yaml"),
            "--dataset-repo", "https://git.example.invalid/data.git"]  # fmt: skip
    assert main(args) == 3
    assert f"could not submit to {host}" in capsys.readouterr().err


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--local" in out and "--host" in out and "KFP_TOKEN" in out and "catalogue_refresh" in out

"""The repository as a DVC project: ``dvc.yaml`` stages, ``dvc.lock`` versions, a local remote, old versions back.

Real git, real DVC (CLI and in-process API), the real ``avlops data synth``/``check`` commands, no mocks. Each test
builds a throw-away project in a temporary folder from this repository's ``dvc.yaml``, ``.dvc/config``,
``.gitignore`` and ``params.yaml`` (with a tiny corpus), so nothing here touches the real workspace.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dvc.repo  # noqa: F401 - see below
import pytest
import yaml

from avlops.cli import version as version_cli
from avlops.config import ConfigError
from avlops.data.params import VersioningConfig
from avlops.data.versioning import (
    NotADvcRepoError,
    RemoteError,
    RevisionError,
    VersioningError,
    checkout_revision,
    configure_remote,
    dataset_at_revision,
    export_at_revision,
    path_versions,
    pull,
    push,
    remote_status,
    repro,
    status,
    uncommitted,
)
from tiny_project import ENV  # the same git and DVC environment as the pipeline and demo tests

# `import dvc` installs logging handlers bound to the sys.stdout/stderr of that moment. Imported first inside a test,
# they would hold that test's capture streams and raise on every later log line once those close; imported here, at
# collection, they hold pytest's session-long streams.
# DVC 3.67 calls a deprecated pygtrie API on every index build; not ours to fix.
pytestmark = pytest.mark.filterwarnings(r"ignore::DeprecationWarning:dvc\..*")

REPO = Path(__file__).resolve().parents[2]
CFG = VersioningConfig()  # the default: local remote ".dvc-storage" under the project root
TINY_SYNTH = {"clips": 6, "seconds": 1.0, "fps": 4, "size": 32, "workers": 1}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same environment for in-process DVC and the subprocesses; the venv's ``avlops`` first on PATH."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def sh(cwd: Path, *cmd: str) -> str:
    """Run a command; fail the test with its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=os.environ.copy())
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def commit(root: Path, message: str) -> str:
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", message)
    return sh(root, "git", "rev-parse", "HEAD").strip()


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def set_params(root: Path, section: str, **values: Any) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section] = {**params.get(section, {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def new_git_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sh(root, "git", "init", "-q", "-b", "main")
    return root


def cli(*argv: str) -> int:
    """``avlops data <argv>`` through the subcommands of :mod:`avlops.cli.version` (run in the current folder)."""
    parser = argparse.ArgumentParser(prog="avlops data")
    version_cli.register(parser.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of this repository as a DVC project: its dvc.yaml, .dvc/config, .gitignore, code deps, tiny params."""
    root = new_git_repo(tmp_path / "project")
    sh(root, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    for name in (".gitignore", ".dvcignore", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    # The data stages only: versioning is what is under test here; the later stages (preprocess, validate,
    # features) are exercised end to end by tests/integration/test_demo.py.
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in ("synth", "check")}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for dep in {d for s in stages.values() for d in s.get("deps", []) if "${" not in d and (REPO / d).exists()}:
        (root / dep).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / dep).is_dir():  # code deps: a change in them re-runs the stage
            shutil.copytree(REPO / dep, root / dep, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / dep, root / dep)
    set_params(root, "synth", **TINY_SYNTH)
    commit(root, "project")
    return root


@pytest.mark.slow
def test_pipeline_versions_push_and_restore(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project
    manifest = root / "data" / "synth" / "manifest.jsonl"
    summary = root / "reports" / "check" / "summary.json"

    # dvc repro (the CLI, as a user runs it) runs synth, then check on its output
    out = sh(root, "dvc", "repro")
    assert "Running stage 'synth'" in out and "Running stage 'check'" in out, out
    assert manifest.is_file() and len(manifest.read_text().splitlines()) == TINY_SYNTH["clips"]
    assert json.loads(summary.read_text())["passed"] is True
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["synth"]["params"]["params.yaml"]["synth"]["clips"] == TINY_SYNTH["clips"]

    # nothing changed: nothing runs
    assert "Running stage" not in sh(root, "dvc", "repro")
    assert status(root) == {}

    # a check-only param re-runs check and leaves synth (and its data) alone
    set_params(root, "check", max_bad_fraction=0.01)
    synth_before = tree_digest(root / "data" / "synth")
    assert repro(root) == ["check"]
    assert tree_digest(root / "data" / "synth") == synth_before

    # version 1: push the data, commit dvc.lock (the commit is the version)
    assert remote_status(root, CFG)  # nothing pushed yet
    assert push(root, CFG) > 0
    assert remote_status(root, CFG) == {}
    assert (root / ".dvc-storage" / "files" / "md5").is_dir()  # the default remote resolves to <root>/.dvc-storage
    assert uncommitted(root) == ["dvc.lock", "params.yaml"]
    v1 = commit(root, "dataset v1")
    v1_data = tree_digest(root / "data" / "synth")

    # version 2: another seed re-runs synth and then check (its dep changed)
    set_params(root, "synth", seed=7)
    assert repro(root) == ["synth", "check"]
    assert tree_digest(root / "data" / "synth") != v1_data
    push(root, CFG)
    v2 = commit(root, "dataset v2: seed 7")
    v2_data = tree_digest(root / "data" / "synth")
    v2_manifest = manifest.read_bytes()

    # the old manifest, read at its revision without checking anything out
    old = dataset_at_revision(root, "data/synth/manifest.jsonl", v1, CFG)
    assert hashlib.sha256(old).hexdigest() == v1_data["manifest.jsonl"]
    assert manifest.read_bytes() == v2_manifest

    # git checkout <old rev> + dvc checkout gives exactly the old dataset back, from the cache
    sh(root, "git", "checkout", "-q", v1)
    sh(root, "dvc", "checkout")
    assert tree_digest(root / "data" / "synth") == v1_data
    sh(root, "git", "checkout", "-q", "main")
    sh(root, "dvc", "checkout")
    assert tree_digest(root / "data" / "synth") == v2_data

    # a fresh machine: no cache, no data; everything comes back from the remote
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "data")
    assert dataset_at_revision(root, "data/synth/manifest.jsonl", v1, CFG) == old  # streamed from the remote
    pull(root, CFG)
    assert tree_digest(root / "data" / "synth") == v2_data
    assert status(root) == {}

    # the CLI: list the versions, put v1's data in the workspace, go back; the git index is never touched
    monkeypatch.chdir(root / "data")  # anywhere inside the repository
    capsys.readouterr()
    assert cli("versions", "synth/manifest.jsonl", "--summary", "../reports/check/summary.json", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["rev"], v["output"], v["nfiles"], v["summary"]["passed"]) for v in listed] == [
        (v2, "data/synth", len(v2_data), True),
        (v1, "data/synth", len(v1_data), True),  # v1's summary comes from the remote
    ]
    assert cli("checkout", v1[:8]) == 0
    assert "fetched from remote" in capsys.readouterr().out  # the fresh cache holds only v2
    assert tree_digest(root / "data" / "synth") == v1_data
    assert sh(root, "git", "status", "--porcelain").strip() == "M dvc.lock"  # worktree only, not staged
    assert cli("checkout", "HEAD") == 0
    assert tree_digest(root / "data" / "synth") == v2_data
    assert sh(root, "git", "status", "--porcelain").strip() == ""

    # export an old version to a new folder
    assert cli("get", "synth", "--rev", v1, "--out", str(root.parent / "v1")) == 0
    assert tree_digest(root.parent / "v1") == v1_data


@pytest.fixture
def added(tmp_path: Path) -> Path:
    """A small DVC repo with one file tracked by ``dvc add`` in two committed versions, pushed to ``.dvc-storage``."""
    from dvc.repo import Repo

    root = new_git_repo(tmp_path / "added")
    Repo.init(os.fspath(root))
    (root / ".gitignore").write_text("/.dvc-storage/\n")
    data = root / "data"
    data.mkdir()
    for i, text in enumerate(["first\n", "second\n"]):
        (data / "labels.txt").write_text(text)
        with Repo(os.fspath(root)) as repo:
            repo.add(os.fspath(data))
        push(root, CFG)
        commit(root, f"labels v{i + 1}")
    return root


def test_versions_of_a_dvc_add_tracked_folder(added: Path) -> None:
    versions = path_versions(added, added / "data" / "labels.txt")
    assert [v.subject for v in versions] == ["labels v2", "labels v1"]
    assert {v.output for v in versions} == {"data"}
    assert dataset_at_revision(added, "data/labels.txt", versions[1].rev, CFG) == b"first\n"

    (added / "data" / "labels.txt").write_text("third\n")
    from dvc.repo import Repo

    with Repo(os.fspath(added)) as repo:
        repo.add(os.fspath(added / "data"))
    assert path_versions(added, "data")[0].rev == "workspace"
    # the uncommitted data.dvc is in no commit: checkout refuses to overwrite it unless forced
    with pytest.raises(VersioningError, match="uncommitted"):
        checkout_revision(added, "HEAD~1", CFG)
    result = checkout_revision(added, "HEAD~1", CFG, force=True)
    assert result.metafiles == ["data.dvc"] and not result.at_head
    assert (added / "data" / "labels.txt").read_text() == "first\n"


def test_configure_remote_writes_local_config(added: Path) -> None:
    local = added / ".dvc" / "config.local"
    assert configure_remote(added, VersioningConfig(remote_name="store", remote_url="elsewhere/store")) == str(
        added / "elsewhere" / "store"
    )
    text = local.read_text()
    assert "remote = store" in text and "url = ../elsewhere/store" in text  # relative to .dvc/: the checkout can move
    configure_remote(added, VersioningConfig(remote_name="store", remote_url="s3://bucket/avlops"))
    assert "url = s3://bucket/avlops" in local.read_text()


def test_clear_errors(added: Path, tmp_path: Path) -> None:
    plain = new_git_repo(tmp_path / "plain")
    with pytest.raises(NotADvcRepoError, match="dvc init"):
        status(plain)
    with pytest.raises(RevisionError, match="no such git revision"):
        dataset_at_revision(added, "data/labels.txt", "no-such-rev", CFG)
    with pytest.raises(RevisionError, match="not tracked"):
        dataset_at_revision(added, "data/nothing.txt", "HEAD", CFG)
    with pytest.raises(RevisionError, match="not a DVC output"):
        path_versions(added, "README.md")
    with pytest.raises(VersioningError, match="not empty"):
        export_at_revision(added, "data", "HEAD", added / "data", CFG)

    empty = VersioningConfig(remote_name="empty", remote_url=str(tmp_path / "empty-remote"))
    shutil.rmtree(added / ".dvc" / "cache")
    shutil.rmtree(added / "data")
    with pytest.raises(RemoteError, match="lacks data"):
        pull(added, empty)
    with pytest.raises(RemoteError, match="not readable from the cache nor the remote"):
        dataset_at_revision(added, "data/labels.txt", "HEAD", empty)
    with pytest.raises(RemoteError, match="lacks data after the push"):
        push(added, empty)  # the cache is gone: DVC alone would only warn
    s3 = VersioningConfig(remote_name="s3", remote_url="s3://avlops-test-bucket/data")
    if importlib.util.find_spec("dvc_s3") is None:  # the plugin is an extra: without it, say which to install
        with pytest.raises(RemoteError, match="dvc-s3"):
            push(added, s3)


def test_cli_exit_codes(added: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a DVC repo
    assert cli("pull") == 2
    monkeypatch.chdir(added)
    assert cli("checkout", "no-such-rev") == 2
    assert cli("versions", "data") == 0
    (added / "params.yaml").write_text(f"versioning:\n  remote_url: {tmp_path / 'empty'}\n")
    shutil.rmtree(added / ".dvc" / "cache")
    assert cli("pull", "--force") == 3  # the remote from params.yaml has nothing
    with pytest.raises(ConfigError, match="not found"):  # avlops.cli.main turns it into exit code 2
        cli("push", "--params", str(tmp_path / "missing.yaml"))

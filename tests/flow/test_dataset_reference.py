"""A DVC dataset reference pinned to a commit and content hash, then materialised: real git and DVC, a local remote,
and every bad reference (revision, path, repository, remote) named in its error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dvc.repo  # noqa: F401 - DVC's log handlers bound at collection
import pytest

from avlops.config import ConfigError, build
from avlops.data.versioning import RemoteError, RevisionError
from avlops.flow.dataset import WORKSPACE, DatasetRef, materialize_dataset, resolve_dataset

ENV = {
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@avlops.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@avlops.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _run(root: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=root, check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A git + DVC repository with data/ds (two files) committed and pushed to a local remote."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ENV.items():
            mp.setenv(k, v)
        root = tmp_path_factory.mktemp("dvcrepo") / "repo"
        (root / "data" / "ds").mkdir(parents=True)
        (root / "data" / "ds" / "manifest.jsonl").write_text('{"clip_id": "a"}\n')
        (root / "data" / "ds" / "b.txt").write_text("b\n")
        dvc = str(Path(sys.executable).parent / "dvc")
        _run(root, "git", "init", "-q", "-b", "main")
        _run(root, dvc, "init", "-q")
        _run(root, dvc, "add", "-q", "data/ds")
        _run(root, dvc, "remote", "add", "-d", "store", str(root.parent / "remote"))
        _run(root, dvc, "push", "-q")
        _run(root, "git", "add", "-A")
        _run(root, "git", "commit", "-q", "-m", "v1")
        yield root


def test_resolve_pins_commit_and_content_hash_and_materialize_copies_that_version(repo: Path, tmp_path: Path) -> None:
    ref = DatasetRef(repo=str(repo), path="data/ds", rev="main")
    lineage = resolve_dataset(ref)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert lineage.commit == head and lineage.content_hash.endswith(".dir")
    out = materialize_dataset(ref, lineage, tmp_path / "ds")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt", "manifest.jsonl"]
    # a second materialisation of the same pin replaces the folder with the same bytes
    assert (materialize_dataset(ref, lineage, out) / "b.txt").read_text() == "b\n"


def test_the_data_comes_from_the_remote_when_the_cache_is_gone(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("cache"))
    ref = DatasetRef(repo=str(clone), path="data/ds", remote_url=str(repo.parent / "remote"))
    out = materialize_dataset(ref, resolve_dataset(ref), tmp_path / "ds")
    assert (out / "manifest.jsonl").is_file()


def test_bad_references_are_named(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(RevisionError, match="dataset rev 'nope': not a revision"):
        resolve_dataset(DatasetRef(repo=str(repo), path="data/ds", rev="nope"))
    with pytest.raises(RevisionError, match="dataset path 'data/missing': not in"):
        resolve_dataset(DatasetRef(repo=str(repo), path="data/missing"))
    with pytest.raises(RevisionError, match="no such folder"):
        resolve_dataset(DatasetRef(repo=str(tmp_path / "nowhere"), path="data/ds"))
    clone = tmp_path / "clone"
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("cache"))
    ref = DatasetRef(repo=str(clone), path="data/ds", remote_url=str(tmp_path / "empty-remote"))
    with pytest.raises(RemoteError, match=r"not in the DVC cache nor in .*empty-remote.*was it pushed"):
        materialize_dataset(ref, resolve_dataset(ref), tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()
    with pytest.raises(ConfigError, match=r"path: .*relative path inside the repository"):
        build(DatasetRef, {"repo": str(repo), "path": "../etc"}, "dataset")


def test_a_rewritten_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    ref = DatasetRef(repo=str(repo), path="data/ds")
    lineage = resolve_dataset(ref)
    forged = type(lineage)(**{**lineage.to_dict(), "content_hash": "0" * 32 + ".dir"})
    with pytest.raises(RevisionError, match=r"content hash .* expected 0+\.dir"):
        materialize_dataset(ref, forged, tmp_path / "ds")


def test_the_working_tree_is_a_revision_of_a_local_repository(repo: Path, tmp_path: Path) -> None:
    ref = DatasetRef(repo=str(repo), path="data/ds", rev=WORKSPACE)
    lineage = resolve_dataset(ref)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert lineage.commit == f"{WORKSPACE}@{head}" and lineage.content_hash.endswith(".dir")
    assert (materialize_dataset(ref, lineage, tmp_path / "ds") / "manifest.jsonl").is_file()
    with pytest.raises(RevisionError, match="only a local repository"):
        resolve_dataset(DatasetRef(repo="https://example.invalid/x.git", path="data/ds", rev=WORKSPACE))

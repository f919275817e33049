"""A DVC dataset reference, resolved to an exact version and materialised into a folder: the pipeline's first step.

``DatasetRef`` is what a user types (a repository URL or path, the dataset's path in it, a git revision, optionally a
remote); :func:`resolve_dataset` pins it to a commit and DVC's content hash (cheap, never cached: a branch moves);
:func:`materialize_dataset` copies exactly that version out through DVC's API (cacheable: the same commit and hash
always give the same bytes) and checks what it copied.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from avlops.config import StrictModel
from avlops.data.versioning import RemoteError, RevisionError, VersioningError
from avlops.flow.lineage import Lineage

if TYPE_CHECKING:
    from dvc.fs import DVCFileSystem

__all__ = ["WORKSPACE", "DatasetRef", "materialize_dataset", "resolve_dataset"]

WORKSPACE = "workspace"  # rev: a local repository's working tree (its dvc.lock not committed yet)

_URL = re.compile(r"^[A-Za-z][\w+.-]*://|^git@")


class DatasetRef(StrictModel):
    """Where a DVC-versioned dataset lives and which version to read."""

    repo: str = Field(description="the DVC repository: a git URL or a local path")
    path: str = Field(description="the dataset's folder (or file) inside the repository, e.g. data/synth")
    rev: str = Field("HEAD", description="git revision: a branch, tag or commit ('workspace': a local working tree)")
    remote_url: str = Field("", description="read data from this DVC remote URL ('' = the remote set at that revision)")
    remote_name: str = Field("avlops", description="the name the remote URL is given")

    @field_validator("repo", "path", "rev")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError(f"{value!r}: must be a relative path inside the repository")
        return value.strip("/")

    @property
    def is_url(self) -> bool:
        return bool(_URL.match(self.repo))

    def location(self) -> str:
        """The repository as DVC opens it: a URL, or an absolute local path."""
        return self.repo if self.is_url else os.fspath(Path(self.repo).expanduser().resolve())


@contextmanager
def _open(ref: DatasetRef, rev: str) -> Iterator[DVCFileSystem]:
    from dvc.exceptions import DvcException
    from dvc.fs import DVCFileSystem
    from dvc.scm import SCMError

    location = ref.location()
    if not ref.is_url and not Path(location).is_dir():
        raise RevisionError(f"dataset repo {ref.repo!r}: no such folder")
    if rev.split("@")[0] == WORKSPACE:
        if ref.is_url:
            raise RevisionError(f"dataset rev {WORKSPACE!r}: only a local repository has a working tree")
        rev = ""
    kwargs: dict[str, Any] = {}
    if ref.remote_url:
        url = ref.remote_url
        if not _URL.match(url) and not ref.is_url:
            url = os.fspath((Path(location) / url).resolve())
        kwargs = {"remote": ref.remote_name, "remote_config": {"url": url}}
    try:
        fs = DVCFileSystem(repo=location, rev=rev or None, **kwargs)
        fs.fs.repo.scm.get_rev()  # DVC opens the repository lazily: make a bad revision fail here, by name
    except SCMError as err:
        raise RevisionError(f"dataset rev {rev!r}: not a revision of {ref.repo} ({err})") from err
    except DvcException as err:
        raise VersioningError(f"dataset repo {ref.repo!r} at {rev!r}: cannot open it: {err}") from err
    try:
        yield fs
    finally:
        fs.close()


def _content_hash(fs: DVCFileSystem, path: str) -> str:
    """DVC's hash of ``path`` ("" when DVC does not track it); in a working tree it sits under ``dvc_info``."""
    info = fs.info(path)
    return str(info.get("md5") or info.get("dvc_info", {}).get("md5") or "")


def resolve_dataset(ref: DatasetRef) -> Lineage:
    """Pin ``ref`` to a git commit and DVC's content hash of its path; nothing is copied."""
    with _open(ref, ref.rev) as fs:
        commit = str(fs.fs.repo.scm.get_rev())
        if ref.rev == WORKSPACE:  # the working tree over its HEAD commit (DVC's workspace view names no revision)
            head = subprocess.run(["git", "-C", ref.location(), "rev-parse", "HEAD"], capture_output=True, text=True)
            commit = f"{WORKSPACE}@{head.stdout.strip() or 'no-commit'}"
        if not fs.exists(ref.path):
            raise RevisionError(f"dataset path {ref.path!r}: not in {ref.repo} at {ref.rev!r} (commit {commit[:10]})")
        content_hash = _content_hash(fs, ref.path)
        if not content_hash:
            raise RevisionError(
                f"dataset path {ref.path!r}: tracked by git, not by DVC, at {ref.rev!r}; version it with dvc add/repro"
            )
    return Lineage(
        repo=ref.repo,
        path=ref.path,
        rev=ref.rev,
        commit=commit,
        content_hash=content_hash,
        remote=ref.remote_url,
    )


def materialize_dataset(ref: DatasetRef, lineage: Lineage, dest: Path) -> Path:
    """Copy the dataset version ``lineage`` pins into ``dest`` (a new or empty folder); returns ``dest``.

    Refuses when the content at that commit is not the hash the lineage recorded (the repository was rewritten),
    and names the remote when the data was never pushed.
    """
    with _open(ref, lineage.commit) as fs:
        found = _content_hash(fs, ref.path)
        if found != lineage.content_hash:
            raise RevisionError(
                f"dataset {ref.path!r} at {lineage.commit[:20]}: content hash {found or 'none'}, expected "
                f"{lineage.content_hash} (the repository changed under the run)"
            )
        if dest.exists():
            shutil.rmtree(dest)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            fs.get(ref.path, os.fspath(tmp), recursive=fs.isdir(ref.path))
        except Exception as err:  # dvc-data and fsspec raise their own errors
            shutil.rmtree(tmp, ignore_errors=True)
            where = ref.remote_url or "the remote configured at that revision"
            raise RemoteError(
                f"dataset {ref.path!r} at {lineage.commit[:10]}: not in the DVC cache nor in {where} "
                f"(was it pushed with `avlops data push`?): {err}"
            ) from err
    tmp.rename(dest)
    return dest

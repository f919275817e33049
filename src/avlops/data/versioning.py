"""Dataset versioning over DVC: remote set-up, ``repro``, ``push``/``pull``, and reading old dataset versions.

A thin adapter over DVC's in-process Python API (``dvc.repo.Repo``, ``dvc.fs.DVCFileSystem``), which avoids the
~1.5 s start-up of each ``dvc`` CLI call, plus plain ``git`` for history. A dataset version is a git commit of
``dvc.lock`` (or of a ``.dvc`` file): it records the content hash of every DVC output, and the bytes live in the DVC
cache and the remote. DVC errors come back as :class:`VersioningError` subclasses with a hint of what to do.

The remote comes from ``params.yaml``'s ``versioning:`` section (:class:`VersioningConfig`); a relative local URL is
relative to the repository root. ``.dvc/config`` holds the default; :func:`configure_remote` writes the params' remote
to ``.dvc/config.local`` (not committed), so plain ``dvc push`` and ``dvc pull`` agree with ``avlops data push``.

Paths and targets given to these functions are relative to the repository root. DVC's API reads some paths against
the process's working directory, so each call runs with the cwd at the root: not safe to call from several threads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import chdir, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from avlops.data.params import VersioningConfig

if TYPE_CHECKING:
    from dvc.fs import DVCFileSystem
    from dvc.repo import Repo

__all__ = [
    "CheckoutResult",
    "DatasetVersion",
    "NotADvcRepoError",
    "RemoteError",
    "RevisionError",
    "VersioningError",
    "checkout_revision",
    "configure_remote",
    "dataset_at_revision",
    "export_at_revision",
    "find_root",
    "path_versions",
    "pull",
    "push",
    "remote_status",
    "remote_url",
    "repro",
    "status",
    "uncommitted",
]

_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*://")
LOCKFILE = "dvc.lock"


class VersioningError(RuntimeError):
    """A DVC or git operation failed; the message says what to do."""


class NotADvcRepoError(VersioningError):
    """The path is not inside a DVC repository (or not inside a git repository where git is needed)."""


class RevisionError(VersioningError):
    """A git revision or a DVC-tracked path does not exist."""


class RemoteError(VersioningError):
    """The remote is unreachable, misconfigured, or lacks data that a version needs."""


# --- repository and remote ------------------------------------------------------------------------------------------


def find_root(path: str | Path = ".") -> Path:
    """The root of the DVC repository holding ``path`` (the folder with ``.dvc/``)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(os.fspath(path)))
    except NotDvcRepoError as err:
        raise _not_a_repo(path) from err


def _not_a_repo(path: str | Path) -> NotADvcRepoError:
    where = Path(path).resolve()
    return NotADvcRepoError(f"{where}: not inside a DVC repository (run `dvc init` at the git repository root)")


def remote_url(repo_root: str | Path, cfg: VersioningConfig) -> str:
    """``cfg.remote_url`` resolved: URLs with a scheme as they are, local paths absolute (relative = to the root)."""
    url = cfg.remote_url
    if _SCHEME.match(url):
        return url
    return os.path.normpath(Path(repo_root).resolve() / Path(url).expanduser())


@contextmanager
def _open(repo_root: str | Path) -> Iterator[Repo]:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(os.fspath(repo_root))
    except NotDvcRepoError as err:
        raise _not_a_repo(repo_root) from err
    # DVC's API resolves some paths against the process's cwd (as its CLI does inside the repo): run at the root.
    # This makes the adapter unsafe to call from several threads at once, as DVC itself is.
    with repo, chdir(repo.root_dir):
        yield repo


def configure_remote(repo_root: str | Path, cfg: VersioningConfig) -> str:
    """Make ``cfg``'s remote the default in ``.dvc/config.local``; returns its resolved URL.

    Like ``dvc remote add --local -d -f``, but keeps extra options set with ``dvc remote modify --local`` (endpoint,
    profile, ...) while the URL scheme stays the same. Credentials belong in the environment or those options, never
    in ``params.yaml``.
    """
    from dvc.config import ConfigError as DvcConfigError
    from dvc.config_schema import RelPath

    with _open(repo_root) as repo:
        root = Path(repo.root_dir)
        url = remote_url(root, cfg)
        value: str = url
        if not _SCHEME.match(url) and Path(url).is_relative_to(root):
            value = RelPath(url)  # stored relative to .dvc/, so the checkout can move
        try:
            with repo.config.edit("local") as conf:
                section = conf["remote"].get(cfg.remote_name, {})
                if _scheme(str(section.get("url", ""))) != _scheme(url):
                    section = {}  # options of another storage type would not validate
                conf["remote"][cfg.remote_name] = {**section, "url": value}
                conf["core"]["remote"] = cfg.remote_name
        except DvcConfigError as err:
            raise RemoteError(f"remote {cfg.remote_name!r} ({url}): {err}") from err
    return url


def _targets(repo_root: str | Path, targets: Sequence[str] | None) -> list[str] | None:
    """Targets for DVC's API, which reads relative ones against the process's cwd: make them root-relative.

    A bare name that is not a file (``synth``) is a stage of the root ``dvc.yaml``; anything else is a path.
    """
    if not targets:
        return None
    root = Path(repo_root).absolute()
    out = []
    for t in targets:
        if os.path.isabs(t):
            out.append(t)
        elif "/" not in t and ":" not in t and not (root / t).exists():
            out.append(f"{root / 'dvc.yaml'}:{t}")
        else:
            out.append(os.fspath(root / t))
    return out


def _scheme(url: str) -> str:
    m = _SCHEME.match(url)
    return m.group(0) if m else ""


def _remote_error(cfg: VersioningConfig, url: str, err: BaseException) -> RemoteError:
    hint = ""
    if isinstance(err, ImportError):
        hint = " (install the DVC plugin for this storage, e.g. `dvc-s3` or `dvc-gs`)"
    return RemoteError(f"remote {cfg.remote_name!r} ({url}): {err}{hint}")


# --- pipeline ---------------------------------------------------------------------------------------------------------


@contextmanager
def _this_installation_first_on_path() -> Iterator[None]:
    """Stage commands (``avlops ...``) run from the environment this process runs in, activated or not."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), before])
    try:
        yield
    finally:
        os.environ["PATH"] = before


def repro(repo_root: str | Path, targets: Sequence[str] | None = None, *, force: bool = False) -> list[str]:
    """Run the stages of ``dvc.yaml`` whose deps, params or outs changed (``dvc repro``); returns the stages run."""
    from dvc.exceptions import DvcException

    with _open(repo_root) as repo, _this_installation_first_on_path():
        try:
            stages = repo.reproduce(targets=_targets(repo.root_dir, targets), force=force)
        except DvcException as err:
            cause = f": {err.__cause__}" if err.__cause__ else ""
            raise VersioningError(f"dvc repro failed: {err}{cause}") from err
    return [str(s.addressing) for s in stages]


def status(repo_root: str | Path) -> dict[str, Any]:
    """``dvc status``: stages whose deps, params or outs differ from ``dvc.lock`` (empty when up to date)."""
    with _open(repo_root) as repo:
        return dict(repo.status())


def remote_status(repo_root: str | Path, cfg: VersioningConfig) -> dict[str, str]:
    """``dvc status --cloud``: tracked paths out of sync with the remote (``new``: only local; ``missing``: nowhere)."""
    url = configure_remote(repo_root, cfg)
    with _open(repo_root) as repo:
        try:
            return _named(repo.status(cloud=True, remote=cfg.remote_name))
        except Exception as err:  # dvc-data and fsspec raise plain OSErrors and ImportErrors for remotes
            raise _remote_error(cfg, url, err) from err


def _named(cloud_status: dict[Any, Any]) -> dict[str, str]:
    """DVC's cloud status without its unnamed entries (a folder listing it could not load; see :func:`_unpushed`)."""
    return {str(k): str(v) for k, v in cloud_status.items() if k is not None}


def push(
    repo_root: str | Path, cfg: VersioningConfig, targets: Sequence[str] | None = None, *, all_commits: bool = False
) -> int:
    """Push the data of ``dvc.lock`` (every commit's with ``all_commits``) to the params' remote; returns files sent.

    Raises :class:`RemoteError` when the push fails, or when some data is still not in the remote afterwards
    (DVC itself only warns when the local cache lacks it).
    """
    url = configure_remote(repo_root, cfg)
    with _open(repo_root) as repo:
        names = _targets(repo.root_dir, targets)
        try:
            sent = int(repo.push(targets=names, remote=cfg.remote_name, all_commits=all_commits))
            left = {} if all_commits else _unpushed(repo, cfg.remote_name, names)
        except Exception as err:
            raise _remote_error(cfg, url, err) from err
    if left:
        listed = "\n".join(f"  {path}: {state}" for path, state in sorted(left.items()))
        raise RemoteError(
            f"remote {cfg.remote_name!r} ({url}) still lacks data after the push:\n{listed}\n"
            "'missing' = not in the local cache either: run `dvc repro` (or `avlops data pull` where it was made)."
        )
    return sent


def _unpushed(repo: Repo, remote: str, targets: list[str] | None) -> dict[str, str]:
    """Outputs of ``dvc.lock`` whose objects the remote lacks (``dvc status --cloud`` plus a check of folder listings,
    which that skips when a ``.dir`` object is in neither the cache nor the remote)."""
    from dvc.config import RemoteConfigError

    left = _named(repo.status(targets=targets, cloud=True, remote=remote))
    try:
        odb = repo.cloud.get_remote_odb(remote, "push")
    except RemoteConfigError:
        return left  # a cloud-versioned remote stores files, not content-addressed objects
    outs = repo.index.targets_view(targets).outs if targets else repo.index.outs
    for out in outs:
        oid = out.hash_info.value if out.use_cache and out.hash_info else None
        if oid and not odb.exists(oid):
            left.setdefault(str(out), "missing")
    return left


def pull(
    repo_root: str | Path,
    cfg: VersioningConfig,
    targets: Sequence[str] | None = None,
    *,
    force: bool = False,
    all_commits: bool = False,
) -> dict[str, Any]:
    """Fetch the data of ``dvc.lock`` from the params' remote and check it out into the workspace (``dvc pull``).

    Returns DVC's summary (``added``/``modified``/``deleted`` paths and ``stats``). ``force`` overwrites workspace
    changes that are not in the cache; ``all_commits`` also fetches every committed version (e.g. for
    ``dvc metrics show -A``).
    """
    from dvc.exceptions import CheckoutError

    url = configure_remote(repo_root, cfg)
    with _open(repo_root) as repo:
        try:
            if all_commits:
                repo.fetch(remote=cfg.remote_name, all_commits=True)
            return dict(repo.pull(targets=_targets(repo.root_dir, targets), remote=cfg.remote_name, force=force))
        except CheckoutError as err:
            raise RemoteError(
                f"remote {cfg.remote_name!r} ({url}) lacks data of this version: {_first_line(err)}\n"
                "Was it pushed (`avlops data push`) after `dvc repro`?"
            ) from err
        except Exception as err:
            if _is_unsaved(err):
                raise VersioningError(f"{_first_line(err)} (workspace data not in the cache)") from err
            raise _remote_error(cfg, url, err) from err


def _is_unsaved(err: BaseException) -> bool:
    """DVC refuses to overwrite workspace files that are not in the cache without ``force``."""
    return "without confirmation" in str(err)


def _first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # DVC colours its links
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and "error.dvc.org" not in line)


# --- older versions -----------------------------------------------------------------------------------------------


@contextmanager
def _fs_at(repo_root: str | Path, rev: str, cfg: VersioningConfig | None) -> Iterator[DVCFileSystem]:
    """A read-only view of the repository at ``rev``, reading data from the cache, else from ``cfg``'s remote.

    The remote is given explicitly: the config committed at an old revision may name another remote, and
    ``.dvc/config.local`` is not part of any revision.
    """
    from dvc.exceptions import DvcException
    from dvc.fs import DVCFileSystem

    root = find_root(repo_root)
    _resolve_rev(root, rev)
    kwargs: dict[str, Any] = {}
    if cfg is not None:
        kwargs = {"remote": cfg.remote_name, "remote_config": {"url": remote_url(root, cfg)}}
    try:
        fs = DVCFileSystem(repo=os.fspath(root), rev=rev, **kwargs)
    except DvcException as err:
        raise VersioningError(f"cannot open {root} at {rev!r}: {err}") from err
    try:
        yield fs
    finally:
        fs.close()


def dataset_at_revision(repo_root: str | Path, path: str, rev: str, cfg: VersioningConfig | None = None) -> bytes:
    """The bytes of the DVC- or git-tracked file ``path`` (relative to the root) as it was at git revision ``rev``.

    Nothing in the workspace changes. Data missing from the local cache is read from ``cfg``'s remote (from the
    remote configured at ``rev`` when ``cfg`` is None).
    """
    with _fs_at(repo_root, rev, cfg) as fs:
        _require(fs, path, rev)
        if fs.isdir(path):
            raise RevisionError(f"{path}: a directory at revision {rev!r}; read a file in it, or export it")
        try:
            return bytes(fs.read_bytes(path))
        except Exception as err:  # dvc-data raises its own errors, fsspec OSErrors
            raise RemoteError(
                f"{path} at {rev!r}: not readable from the cache nor the remote (was it pushed?): {err}"
            ) from err


def _require(fs: DVCFileSystem, path: str, rev: str) -> None:
    """Raise a clear error unless ``path`` exists at ``rev``: untracked, or a folder whose listing is not available."""
    if fs.exists(path):
        return
    for a in _ancestors(path.strip("/"))[1:]:
        if fs.exists(a):
            try:
                fs.ls(a)
            except Exception as err:  # the folder's listing is itself data: dvc-data cannot load it
                raise RemoteError(
                    f"{path} at {rev!r}: the listing of {a} is not readable from the cache nor the remote "
                    "(was it pushed?)"
                ) from err
            break
    raise RevisionError(f"{path}: not tracked at revision {rev!r}")


def export_at_revision(
    repo_root: str | Path, path: str, rev: str, dest: str | Path, cfg: VersioningConfig | None = None
) -> Path:
    """Copy the file or folder ``path`` as it was at ``rev`` to ``dest`` (like ``dvc get``); returns ``dest``."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir() if dest.is_dir() else [dest]):
        raise VersioningError(f"{dest}: exists and is not empty; pick a new folder")
    with _fs_at(repo_root, rev, cfg) as fs:
        _require(fs, path, rev)
        try:
            fs.get(path, os.fspath(dest), recursive=fs.isdir(path))
        except Exception as err:
            raise RemoteError(
                f"{path} at {rev!r}: not readable from the cache nor the remote (was it pushed?): {err}"
            ) from err
    return dest


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a DVC output: the commit that recorded it and what ``dvc.lock`` says about it."""

    rev: str  # full commit hash, or "workspace" for an uncommitted dvc.lock
    date: str  # committer date, ISO 8601 ("" for the workspace)
    subject: str
    output: str  # the DVC output holding the path (the path itself, or the folder it is in)
    md5: str  # content hash; folders end in ".dir"
    size: int | None
    nfiles: int | None


def path_versions(repo_root: str | Path, path: str | Path) -> list[DatasetVersion]:
    """The commits where the DVC output holding ``path`` (absolute, or relative to the root) changed, newest first.

    Reads ``dvc.lock`` (and ``<path>.dvc`` files) from git history only: no data is fetched. An uncommitted change
    in the workspace comes first, as rev ``"workspace"``.
    """
    root = find_root(repo_root)
    rel = _relative(root, path)
    metafiles = [LOCKFILE, *(f"{a}.dvc" for a in _ancestors(rel))]
    log = _git(root, "log", "--format=%H%x1f%cI%x1f%s", "--", *metafiles)
    found: list[DatasetVersion] = []  # newest first, one per commit that records the output
    for line in log.splitlines():
        sha, date, subject = line.split("\x1f", 2)
        out = _out_at(root, sha, metafiles, rel)
        if out is not None:
            found.append(DatasetVersion(sha, date, subject, *out))
    versions = [v for i, v in enumerate(found) if i + 1 == len(found) or found[i + 1].md5 != v.md5]
    current = _out_in_workspace(root, metafiles, rel)
    if current is not None and (not found or found[0].md5 != current[1]):
        versions.insert(0, DatasetVersion("workspace", "", "(uncommitted)", *current))
    if not versions:
        raise RevisionError(f"{rel}: not a DVC output (nor inside one) in any commit of dvc.lock or a .dvc file")
    return versions


def _relative(root: Path, path: str | Path) -> str:
    p = Path(os.path.normpath(path if os.path.isabs(path) else root / path))
    for base, q in ((root.absolute(), p), (root.resolve(), p.resolve())):  # resolve() only as a fallback: a
        if q.is_relative_to(base):  # workspace file may be a link into the cache
            return q.relative_to(base).as_posix()
    raise RevisionError(f"{path}: outside the repository {root}")


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _find_out(text: str, metafile: str, rel: str) -> tuple[str, str, int | None, int | None] | None:
    """``(output, md5, size, nfiles)`` of the output of the metafile ``text`` that is ``rel`` or holds it."""
    data = yaml.safe_load(text) or {}
    base = Path(metafile).parent
    if metafile.endswith(".dvc"):
        outs = data.get("outs", [])
    else:
        outs = [o for stage in (data.get("stages") or {}).values() for o in stage.get("outs", [])]
    for out in outs:
        out_path = (base / str(out.get("path", ""))).as_posix()
        if (rel == out_path or rel.startswith(out_path + "/")) and out.get("md5"):
            return out_path, str(out["md5"]), out.get("size"), out.get("nfiles")
    return None


def _out_at(root: Path, sha: str, metafiles: list[str], rel: str) -> tuple[str, str, int | None, int | None] | None:
    for mf in metafiles:
        try:
            text = _git(root, "show", f"{sha}:{mf}")
        except VersioningError:
            continue  # not in this commit
        out = _find_out(text, mf, rel)
        if out is not None:
            return out
    return None


def _out_in_workspace(root: Path, metafiles: list[str], rel: str) -> tuple[str, str, int | None, int | None] | None:
    for mf in metafiles:
        f = root / mf
        if f.is_file():
            out = _find_out(f.read_text(encoding="utf-8"), mf, rel)
            if out is not None:
                return out
    return None


@dataclass(frozen=True)
class CheckoutResult:
    """What :func:`checkout_revision` did."""

    rev: str  # the full commit hash
    metafiles: list[str]  # dvc.lock / .dvc files restored from that commit
    changes: dict[str, Any]  # DVC's added / modified / deleted paths and stats
    fetched: bool  # data had to come from the remote
    at_head: bool  # rev is the current commit: the workspace is back in step with git


def checkout_revision(repo_root: str | Path, rev: str, cfg: VersioningConfig, *, force: bool = False) -> CheckoutResult:
    """Put the data of git revision ``rev`` in the workspace; code, ``dvc.yaml`` and ``params.yaml`` stay as they are.

    Restores ``dvc.lock`` and the ``.dvc`` files of ``rev`` into the working tree (the git index is not touched),
    then checks the data out from the cache, fetching what is missing from ``cfg``'s remote. Refuses to overwrite a
    ``dvc.lock`` whose content is in no commit (an uncommitted ``dvc repro``), or workspace data that is not in the
    cache, unless ``force``. Return with ``checkout_revision(root, "HEAD", cfg)``.
    """
    root = find_root(repo_root)
    sha = _resolve_rev(root, rev)
    metafiles = [
        name
        for name in _git(root, "ls-tree", "-r", "--name-only", sha).splitlines()
        if (name == LOCKFILE or name.endswith("/" + LOCKFILE) or name.endswith(".dvc")) and not name.startswith(".dvc/")
    ]
    if not metafiles:
        raise RevisionError(f"{rev!r} has no dvc.lock or .dvc file: no dataset version was committed there")
    if not force:
        unsaved = [mf for mf in metafiles if (root / mf).is_file() and not _committed_somewhere(root, root / mf)]
        if unsaved:
            raise VersioningError(
                f"{', '.join(unsaved)}: uncommitted content (from a `dvc repro`?) would be overwritten. "
                "Commit it, or pass force=True / --force."
            )
    before = {mf: (root / mf).read_bytes() if (root / mf).is_file() else None for mf in metafiles}
    try:
        for mf in metafiles:
            (root / mf).parent.mkdir(parents=True, exist_ok=True)
            (root / mf).write_bytes(_git_bytes(root, "show", f"{sha}:{mf}"))
        changes, fetched = _checkout_data(root, cfg, force=force)
    except BaseException:
        for mf, content in before.items():  # leave dvc.lock matching the workspace data
            if content is None:
                (root / mf).unlink(missing_ok=True)
            else:
                (root / mf).write_bytes(content)
        raise
    return CheckoutResult(sha, metafiles, changes, fetched, at_head=sha == _resolve_rev(root, "HEAD"))


def _checkout_data(root: Path, cfg: VersioningConfig, *, force: bool) -> tuple[dict[str, Any], bool]:
    """``dvc checkout`` from the cache; ``dvc pull`` when the cache lacks something. Returns (changes, fetched)."""
    from dvc.exceptions import CheckoutError, DvcException

    with _open(root) as repo:
        try:
            return dict(repo.checkout(force=force)), False
        except CheckoutError:
            pass  # some data is not in the cache: fetch it below
        except DvcException as err:
            hint = " (pass --force to overwrite)" if _is_unsaved(err) else ""
            raise VersioningError(f"dvc checkout failed: {_first_line(err)}{hint}") from err
    return pull(root, cfg, force=force), True


def uncommitted(repo_root: str | Path) -> list[str]:
    """``dvc.lock``, ``.dvc`` files and ``params.yaml`` with changes not yet committed to git (the version's record)."""
    root = find_root(repo_root)
    changed = _git(root, "status", "--porcelain", "--untracked-files=all", "--", "dvc.lock", "params.yaml", "*.dvc")
    return sorted({line[3:].strip() for line in changed.splitlines() if line.strip()})


def _committed_somewhere(root: Path, file: Path) -> bool:
    """Whether ``file``'s current content is the content of a blob some commit introduced."""
    blob = _git(root, "hash-object", "--", os.fspath(file)).strip()
    return bool(_git(root, "log", "--all", "-1", "--format=%H", f"--find-object={blob}").strip())


# --- git --------------------------------------------------------------------------------------------------------------


def _git_bytes(root: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", "-C", os.fspath(root), *args], capture_output=True, check=False)
    except FileNotFoundError as err:
        raise VersioningError("git is not installed") from err
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip()
        if "not a git repository" in msg:
            raise NotADvcRepoError(f"{root}: not inside a git repository (versions are git commits)")
        raise VersioningError(f"git {' '.join(args)}: {msg}")
    return proc.stdout


def _git(root: Path, *args: str) -> str:
    return _git_bytes(root, *args).decode("utf-8", errors="replace")


def _resolve_rev(root: Path, rev: str) -> str:
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except NotADvcRepoError:
        raise
    except VersioningError as err:
        raise RevisionError(f"{rev!r}: no such git revision in {root}") from err

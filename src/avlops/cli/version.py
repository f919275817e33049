"""``avlops data push|pull|versions|checkout|get``: dataset versions with DVC and git.

A dataset version is a git commit of ``dvc.lock``; the data lives in the DVC cache and the remote named in
``params.yaml``'s ``versioning:`` section. Run these from anywhere inside the repository.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from avlops.cli import ExitCode
from avlops.config import load_section
from avlops.data.params import VersioningConfig
from avlops.data.versioning import (
    DatasetVersion,
    NotADvcRepoError,
    RemoteError,
    RevisionError,
    VersioningError,
    checkout_revision,
    dataset_at_revision,
    export_at_revision,
    find_root,
    path_versions,
    pull,
    push,
    remote_url,
    status,
    uncommitted,
)

__all__ = ["register"]

_PARAMS_HELP = "params.yaml to read the [versioning] remote from (default: the repository's params.yaml)"


def register(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the versioning subcommands to the ``avlops data`` group."""
    p = dsub.add_parser(
        "push",
        help="send the data recorded in dvc.lock to the DVC remote",
        description="Set the DVC remote from params.yaml [versioning] (in .dvc/config.local) and push the data "
        "that dvc.lock records. Fails when some of it is still not in the remote afterwards. Commit dvc.lock too: "
        "the commit is the version, the remote holds its bytes.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="stages or outputs to push (default: all)")
    p.add_argument("--params", type=Path, metavar="YAML", help=_PARAMS_HELP)
    p.add_argument(
        "--all-commits", action="store_true", help="push the data of every commit, not only of the current dvc.lock"
    )
    p.set_defaults(handler=run_push)

    p = dsub.add_parser(
        "pull",
        help="fetch the data recorded in dvc.lock from the DVC remote into the workspace",
        description="Set the DVC remote from params.yaml [versioning] and pull the data that the current dvc.lock "
        "records (after `git clone`, `git pull` or `git checkout`).",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="stages or outputs to pull (default: all)")
    p.add_argument("--params", type=Path, metavar="YAML", help=_PARAMS_HELP)
    p.add_argument("--force", action="store_true", help="overwrite workspace changes that are not in the cache")
    p.add_argument("--all-commits", action="store_true", help="also fetch every committed version into the cache")
    p.set_defaults(handler=run_pull)

    p = dsub.add_parser(
        "versions",
        help="list the commits where a DVC-tracked dataset changed",
        description="List the git commits where the DVC output holding PATH changed, newest first, with its "
        "content hash, file count and size from dvc.lock (no data is fetched). An uncommitted change shows as "
        "'workspace'. Use a REV with `avlops data checkout REV` or `avlops data get PATH --rev REV`.",
    )
    p.add_argument("path", metavar="PATH", help="a DVC output (e.g. data/synth) or a file inside one")
    p.add_argument(
        "--summary",
        metavar="JSON",
        help="a DVC-tracked JSON file (e.g. reports/check/summary.json) to show per version",
    )
    p.add_argument("--params", type=Path, metavar="YAML", help=_PARAMS_HELP + "; used with --summary")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(handler=run_versions)

    p = dsub.add_parser(
        "checkout",
        help="put the data of an older commit into the workspace",
        description="Restore dvc.lock (and .dvc files) of git revision REV into the working tree, without touching "
        "the git index, and check its data out from the DVC cache, fetching what is missing from the remote. "
        "Code, dvc.yaml and params.yaml stay as they are. Go back with `avlops data checkout HEAD`. "
        "For the whole old project instead: `git checkout REV && avlops data pull`.",
    )
    p.add_argument("rev", metavar="REV", help="git revision: commit, tag or branch (see `avlops data versions`)")
    p.add_argument("--params", type=Path, metavar="YAML", help=_PARAMS_HELP)
    p.add_argument(
        "--force", action="store_true", help="overwrite an uncommitted dvc.lock and workspace data not in the cache"
    )
    p.set_defaults(handler=run_checkout)

    p = dsub.add_parser(
        "get",
        help="copy a dataset (or one file of it) as it was at a commit to a new folder",
        description="Copy PATH as it was at git revision REV to OUT, reading from the DVC cache or the remote. "
        "The workspace and dvc.lock are not touched.",
    )
    p.add_argument("path", metavar="PATH", help="a DVC-tracked folder or file")
    p.add_argument("--rev", required=True, metavar="REV", help="git revision to read")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="destination (must not exist, or be empty)")
    p.add_argument("--params", type=Path, metavar="YAML", help=_PARAMS_HELP)
    p.set_defaults(handler=run_get)


Handler = Callable[[argparse.Namespace], int]


def _errors(fn: Handler) -> Handler:
    """Turn versioning errors into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (NotADvcRepoError, RevisionError) as err:
            print(f"avlops: {err}", file=sys.stderr)
            return ExitCode.USAGE
        except RemoteError as err:
            print(f"avlops: {err}", file=sys.stderr)
            return ExitCode.INPUT
        except VersioningError as err:
            print(f"avlops: {err}", file=sys.stderr)
            return ExitCode.FAILED

    return wrapper


def _setup(args: argparse.Namespace) -> tuple[Path, VersioningConfig]:
    """The repository root (from the working directory) and the remote from --params or the root's params.yaml."""
    root = find_root(Path.cwd())
    params = args.params
    if params is None and (root / "params.yaml").is_file():
        params = root / "params.yaml"
    return root, load_section(params, "versioning", VersioningConfig)


def _from_root(root: Path, path: str) -> str:
    """A path given on the command line (relative to the working directory) as the library takes it: root-relative."""
    return Path(os.path.relpath(Path(path).absolute(), root)).as_posix()


def _cwd_targets(targets: list[str]) -> list[str] | None:
    """Paths on the command line are relative to the working directory; stage names stay names."""
    return [os.path.abspath(t) if "/" in t or Path(t).exists() else t for t in targets] or None


@_errors
def run_push(args: argparse.Namespace) -> int:
    root, cfg = _setup(args)
    stale = sorted(status(root))
    if stale:
        names = ", ".join(stale)
        warning = f"stages {names} differ from dvc.lock; pushing what it records (run `dvc repro` first)"
        print(f"avlops: warning: {warning}", file=sys.stderr)
    sent = push(root, cfg, _cwd_targets(args.targets), all_commits=args.all_commits)
    url = remote_url(root, cfg)
    print(f"pushed {sent} file(s) to remote {cfg.remote_name!r} ({url}); it holds all the data dvc.lock records")
    pending = uncommitted(root)
    if pending:
        print(f"next: commit {' '.join(pending)} so that this version has a name (a git commit)")
    return ExitCode.OK


@_errors
def run_pull(args: argparse.Namespace) -> int:
    root, cfg = _setup(args)
    result = pull(root, cfg, _cwd_targets(args.targets), force=args.force, all_commits=args.all_commits)
    print(f"pulled from remote {cfg.remote_name!r} ({remote_url(root, cfg)}): {_describe(result)}")
    return ExitCode.OK


def _describe(changes: dict[str, Any]) -> str:
    stats = changes.get("stats", {})
    parts = [f"{stats.get(k, 0)} {k}" for k in ("fetched", "added", "modified", "deleted") if k in stats]
    return ", ".join(parts) or "nothing to do"


@_errors
def run_versions(args: argparse.Namespace) -> int:
    root = find_root(Path.cwd())
    versions = path_versions(root, os.path.abspath(args.path))
    cfg = _setup(args)[1] if args.summary else None
    rows = []
    for v in versions:
        row: dict[str, Any] = asdict(v)
        if args.summary:
            row["summary"] = _summary(root, _from_root(root, args.summary), v, cfg)
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return ExitCode.OK
    print(f"{versions[0].output}: {len(versions)} version(s), newest first")
    print(f"{'REV':<10} {'DATE':<10} {'FILES':>6} {'SIZE':>9}  {'MD5':<10} SUBJECT")
    for v, row in zip(versions, rows, strict=True):
        rev = v.rev[:9] if v.rev != "workspace" else "workspace"
        files = "" if v.nfiles is None else str(v.nfiles)
        print(f"{rev:<10} {v.date[:10]:<10} {files:>6} {_size(v.size):>9}  {v.md5[:10]:<10} {v.subject}")
        if args.summary:
            print(f"{'':<10} {row['summary']}")
    return ExitCode.OK


def _summary(root: Path, path: str, v: DatasetVersion, cfg: VersioningConfig | None) -> Any:
    """The JSON file ``path`` at version ``v`` (top-level scalars only), or why it cannot be read."""
    try:
        raw = (root / path).read_bytes() if v.rev == "workspace" else dataset_at_revision(root, path, v.rev, cfg)
        data = json.loads(raw)
    except (VersioningError, OSError, ValueError) as err:
        return f"(no summary: {err})"
    if isinstance(data, dict):
        return {k: val for k, val in data.items() if isinstance(val, str | int | float | bool) or val is None}
    return data


def _size(n: int | None) -> str:
    if n is None:
        return ""
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KB"
    for bigger in ("MB", "GB", "TB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


@_errors
def run_checkout(args: argparse.Namespace) -> int:
    root, cfg = _setup(args)
    result = checkout_revision(root, args.rev, cfg, force=args.force)
    source = f"fetched from remote {cfg.remote_name!r}" if result.fetched else "from the cache"
    print(f"restored {', '.join(result.metafiles)} of {result.rev[:9]}; data {source}: {_describe(result.changes)}")
    if not result.at_head:
        print(
            "The workspace data is that version; code, dvc.yaml and params.yaml are unchanged, so `git status` shows "
            "dvc.lock modified and `dvc repro` would rebuild the current version.\n"
            "Go back: avlops data checkout HEAD"
        )
    return ExitCode.OK


@_errors
def run_get(args: argparse.Namespace) -> int:
    root, cfg = _setup(args)
    out = export_at_revision(root, _from_root(root, args.path), args.rev, args.out, cfg)
    print(f"{args.path} at {args.rev} -> {out}")
    return ExitCode.OK

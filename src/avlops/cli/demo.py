"""``avlops demo``: the embedded end-to-end flow on one machine, driven by ``dvc repro``.

Every stage of ``dvc.yaml`` runs (only what changed since the last run), the data is pushed to the DVC remote
configured in ``params.yaml``, and a summary of each stage's report is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from avlops.cli import ExitCode
from avlops.config import load_section
from avlops.data import versioning
from avlops.params import ProjectParams

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole embedded flow (dvc repro of every stage, push, summary)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="project parameters (default: %(default)s)")
    p.add_argument("--no-push", action="store_true", help="do not push the data to the DVC remote")
    p.add_argument("--force", action="store_true", help="re-run every stage even when nothing changed")
    p.set_defaults(handler=run_demo)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def run_demo(args: argparse.Namespace) -> int:
    params = load_section(args.params, None, ProjectParams)  # the whole file, so a typo anywhere is caught first
    root = versioning.find_root(args.params.resolve().parent)

    _section("pipeline: dvc repro")
    start = time.perf_counter()
    ran = versioning.repro(root, force=args.force)
    print(
        f"stages run: {', '.join(ran) if ran else 'none (everything up to date)'} "
        f"in {time.perf_counter() - start:.1f} s"
    )

    if not args.no_push:
        _section("versioning: dvc push")
        sent = versioning.push(root, params.versioning)
        print(
            f"pushed {sent} file(s) to remote {params.versioning.remote_name!r} "
            f"({versioning.remote_url(root, params.versioning)})"
        )

    _section("summary")
    return _print_summary(root, params)


def _print_summary(root: Path, params: ProjectParams) -> int:
    ok = True
    check = _read_json(root / (params.check.report_dir or "") / "summary.json")
    if check is None:
        print("check: no report found")
        ok = False
    else:
        ok &= bool(check.get("passed"))
        print(
            f"dataset {params.synth.out}: {check['kept']} clips kept, {check['quarantined']} quarantined, "
            f"{check['captions']} captions; splits {check['by_split']}; audio types {check['by_audio_type']}"
        )
    versions = versioning.path_versions(root, params.synth.out) if (root / "dvc.lock").is_file() else []
    if versions:
        v = versions[-1]
        where = "uncommitted dvc.lock" if v.rev == "workspace" else f"commit {v.rev[:10]}"
        print(f"data version: {v.output} md5 {v.md5}, {v.nfiles} files, {v.size or 0} bytes ({where})")
        if v.rev == "workspace":
            print("record it with: git add dvc.lock && git commit -m 'data: ...'")
    return ExitCode.OK if ok else ExitCode.FAILED

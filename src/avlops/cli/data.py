"""``avlops data ...``: make, import, check and version datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from avlops.cli import ExitCode, describe
from avlops.config import load_section, override
from avlops.data.check import check_dataset
from avlops.data.manifest import write_manifest
from avlops.data.params import CheckConfig

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="make, import, check and version datasets", description=describe(__doc__))
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    c = dsub.add_parser(
        "check",
        help="check a manifest against the dataset contract and its media",
        description="Check every record of a manifest: schema, unique ids, paths inside the dataset root, media "
        "present and decodable. Bad records are listed with file:line and reason and written to a quarantine file; "
        "the good ones are kept. Exits 1 only when the bad fraction passes --max-bad-fraction.",
    )
    c.add_argument("--manifest", type=Path, help="manifest JSONL (default: from --params [check])")
    c.add_argument("--params", type=Path, help="params.yaml to read the [check] section from")
    c.add_argument("--max-bad-fraction", type=float, help="fail when more than this fraction of records is bad")
    c.add_argument("--report-dir", type=Path, help="where summary.json and quarantine.jsonl go")
    c.add_argument(
        "--clean-manifest",
        type=Path,
        help="also write the kept records to this manifest; a bare file name goes next to --manifest (same folder)",
    )
    c.add_argument("--no-decode", action="store_true", help="only open media, do not decode a frame")
    c.set_defaults(handler=run_check)

    from avlops.cli import data_import, synth, validate, version  # the subcommands live in their own modules

    synth.register(dsub)
    data_import.register(dsub)
    version.register(dsub)
    validate.register(dsub)


def run_check(args: argparse.Namespace) -> int:
    cfg = override(
        load_section(args.params, "check", CheckConfig),
        manifest=str(args.manifest) if args.manifest else None,
        max_bad_fraction=args.max_bad_fraction,
        report_dir=str(args.report_dir) if args.report_dir else None,
    )
    manifest = Path(cfg.manifest)
    outcome = check_dataset(cfg, decode=not args.no_decode)
    report, summary, passed = outcome.report, outcome.summary, outcome.passed
    if args.clean_manifest:
        clean: Path = args.clean_manifest
        if not clean.is_absolute() and clean.parent == Path():  # a bare file name: next to the manifest
            clean = manifest.parent / clean
        if clean.resolve().parent != manifest.resolve().parent:
            print(
                f"avlops: --clean-manifest {clean} must sit in the same folder as the manifest {manifest} (media paths "
                "are relative to it); give a bare file name to put it there"
            )
            return ExitCode.USAGE
        if clean.resolve() == manifest.resolve():
            print(f"avlops: --clean-manifest {clean} would overwrite the manifest it checks; give another name")
            return ExitCode.USAGE
        write_manifest(clean, report.records)
        print(f"clean manifest: {clean} ({len(report.records)} records)")
    for p in report.problems:
        print(f"bad record: {p.format()}")
    print(
        f"{manifest}: {summary['kept']} kept, {summary['quarantined']} quarantined "
        f"({summary['bad_fraction']:.1%} bad, limit {cfg.max_bad_fraction:.1%}); "
        f"splits {summary['by_split']}; audio types {summary['by_audio_type']}"
    )
    print(f"quarantine: {outcome.quarantine}  summary: {outcome.summary_path}")
    if not passed:
        print("check FAILED: " + ("no records" if report.total == 0 else "too many bad records"))
        return ExitCode.FAILED
    return ExitCode.OK

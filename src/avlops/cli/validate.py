"""``avlops data validate``: the Great Expectations suites over a manifest and its preprocessing statistics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import load_section, override
from avlops.validation.params import ValidateConfig

__all__ = ["register", "run_validate"]


def register(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``validate`` to the ``avlops data`` group."""
    v = dsub.add_parser(
        "validate",
        help="validate a manifest and its preprocessing statistics with Great Expectations",
        description="Run the manifest suite (ids, splits, audio types, captions, leakage across splits) and, with "
        "--stats, the preprocessing-statistics suite (durations, frames, resolution, sample rates, silent audio). "
        "Writes a Data Docs HTML report, summary.json and quarantine.jsonl (failing clips with reasons) under --out. "
        "Exits 1 when a dataset-level expectation fails or the bad fraction passes --max-bad-fraction.",
    )
    v.add_argument("--manifest", type=Path, help="manifest JSONL (default: from --params [validation])")
    v.add_argument("--stats", type=Path, help="stats.parquet written by `avlops preprocess`")
    v.add_argument("--out", type=Path, help="report folder (default reports/validate)")
    v.add_argument("--params", type=Path, help="params.yaml to read the [validation] section from")
    v.add_argument("--max-bad-fraction", type=float, help="fail when more than this fraction of clips is bad")
    v.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    cfg = override(
        load_section(args.params, "validation", ValidateConfig),
        manifest=str(args.manifest) if args.manifest else None,
        stats=str(args.stats) if args.stats else None,
        out=str(args.out) if args.out else None,
        max_bad_fraction=args.max_bad_fraction,
    )
    if not getattr(args, "verbose", False):  # its INFO chatter (registries, stores) would drown the report
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from avlops.validation.run import validate_dataset  # here: Great Expectations takes seconds to import

    report = validate_dataset(cfg)
    for o in report.outcomes:
        if not o.success:
            what = o.error or f"{o.unexpected_count} unexpected, e.g. {[e['clip_id'] for e in o.examples]}"
            print(f"FAILED [{o.suite}, {o.level}] {o.reason}: {what}")
    print(
        f"{cfg.manifest}: {report.total} clips, {report.bad} quarantined ({report.bad_fraction:.1%} bad, "
        f"limit {cfg.max_bad_fraction:.1%}); {sum(o.success for o in report.outcomes)}/{len(report.outcomes)} "
        "expectations met"
    )
    print(f"data docs: {report.docs_index}")
    print(f"summary: {report.summary_path}  quarantine: {report.quarantine_path}")
    if not report.passed:
        why = [f"dataset-level: {o.suite}: {o.reason}" for o in report.failed_dataset]
        if report.bad_fraction > cfg.max_bad_fraction:
            why.append("too many bad clips")
        print("validate FAILED: " + ("; ".join(why) or "no records"))
        return ExitCode.FAILED
    print("validate passed")
    return ExitCode.OK

"""``avlops features ...``: fill and query the Feast feature store."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from avlops.cli import ExitCode, describe
from avlops.config import load_section, override
from avlops.features.params import FeaturesConfig

__all__ = ["register", "run_lookup", "run_materialize"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the top-level ``features`` group."""
    p = sub.add_parser("features", help="fill and query the feature store (Feast)", description=describe(__doc__))
    fsub = p.add_subparsers(dest="features_command", metavar="SUBCOMMAND", required=True)

    m = fsub.add_parser(
        "materialize",
        help="write clip features to the offline store and load the online store",
        description="Build the clip-metadata (from the manifest) and clip-statistics (from stats.parquet) tables, "
        "append them to the offline parquet sources stamped with an event timestamp, apply the Feast definitions "
        "and materialize into the online store. The store is rendered into --repo-dir from the [features] config.",
    )
    m.add_argument("--manifest", type=Path, help="manifest JSONL (default: from --params [features])")
    m.add_argument("--stats", type=Path, help="stats.parquet written by `avlops preprocess`")
    m.add_argument("--repo-dir", type=Path, help="working folder of the store (default artifacts/feast)")
    m.add_argument("--params", type=Path, help="params.yaml to read the [features] section from")
    m.add_argument(
        "--quarantine",
        type=Path,
        action="append",
        help="a quarantine.jsonl (from `avlops data validate` or `data check`) whose clips are not published; "
        "repeatable, added to [features] quarantine",
    )
    m.add_argument(
        "--event-timestamp",
        type=datetime.fromisoformat,
        help="ISO 8601 time the features are valid from (default now; naive times are UTC)",
    )
    m.set_defaults(handler=run_materialize)

    lk = fsub.add_parser("lookup", help="print the online features of some clips as JSON")
    lk.add_argument("clip_ids", nargs="+", metavar="CLIP_ID")
    lk.add_argument("--repo-dir", type=Path, help="working folder of the store (default artifacts/feast)")
    lk.add_argument("--params", type=Path, help="params.yaml to read the [features] section from")
    lk.set_defaults(handler=run_lookup)


def _config(args: argparse.Namespace, **changes: object) -> FeaturesConfig:
    if not getattr(args, "verbose", False):  # Feast logs every registry refresh at INFO
        logging.getLogger("feast").setLevel(logging.WARNING)
    return override(
        load_section(args.params, "features", FeaturesConfig),
        repo_dir=str(args.repo_dir) if args.repo_dir else None,
        **changes,
    )


def run_materialize(args: argparse.Namespace) -> int:
    cfg = _config(
        args,
        manifest=str(args.manifest) if args.manifest else None,
        stats=str(args.stats) if args.stats else None,
        event_timestamp=args.event_timestamp,
    )
    cfg = override(cfg, quarantine=None if args.quarantine is None else [*cfg.quarantine, *map(str, args.quarantine)])
    from avlops.data.exclusions import ExclusionError, describe_dropped
    from avlops.features.store import materialize_features  # here: Feast takes seconds to import

    try:
        report = materialize_features(cfg)
    except ExclusionError as err:
        print(f"avlops features materialize: {err}", file=sys.stderr)
        return ExitCode.INPUT
    rows = ", ".join(f"{view}: {n} clips" for view, n in report.rows.items())
    print(f"feature store {report.repo_dir}: wrote {rows} at {report.event_timestamp.isoformat()}; materialized")
    if report.dropped:
        print(describe_dropped(report.dropped, "the feature store"))
    elif not cfg.quarantine:
        print("no validation quarantine given (--quarantine or features.quarantine): every clip published")
    if report.skipped_records:
        print(f"skipped {report.skipped_records} manifest records that break the contract (see `avlops data check`)")
    print("online lookup: " + json.dumps(report.example, default=str))
    return ExitCode.OK


def run_lookup(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from avlops.features.store import get_online_clip_features  # here: Feast takes seconds to import

    print(json.dumps(get_online_clip_features(cfg.repo_dir, args.clip_ids), indent=2, default=str))
    return ExitCode.OK

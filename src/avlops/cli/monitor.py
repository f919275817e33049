"""``avlops monitor report``: PNG plots of the current (or last) rollout from the platform's Prometheus."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from avlops.cli import ExitCode

__all__ = ["register"]


def _dashboard() -> Path:
    from avlops.monitoring.prometheus import rules_dir

    return rules_dir().parents[1] / "dashboards" / "avlops-rollout.json"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("monitor", help="monitoring reports from Prometheus")
    msub = m.add_subparsers(dest="monitor_command", metavar="SUBCOMMAND", required=True)
    r = msub.add_parser(
        "report",
        help="PNG plots of the rollout: traffic split, error ratio, p50/p99 per track, quality, analysis verdicts",
    )
    r.add_argument("--workdir", type=Path, default=Path("artifacts/rollout"), help="platform folder")
    r.add_argument("--out", type=Path, default=Path("reports/rollout"), help="folder for the PNG files")
    r.add_argument("--minutes", type=float, help="plot the last N minutes (default: the rollout's whole span)")
    r.add_argument("--step", type=float, default=2.0, help="seconds between plotted samples")
    r.add_argument(
        "--dashboard", type=Path, help="Grafana dashboard JSON (default infra/dashboards/avlops-rollout.json)"
    )
    r.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from avlops.monitoring.prometheus import PrometheusClient, PrometheusError
    from avlops.monitoring.report import render_report
    from avlops.rollout.controller import Controller
    from avlops.rollout.platform import PlatformError

    try:
        controller = Controller(args.workdir)
    except PlatformError as err:
        print(f"avlops monitor report: {err}", file=sys.stderr)
        return ExitCode.INPUT
    state = controller.state()
    end = time.time() if state is None or state.finished is None else state.finished + 20
    whole_rollout = args.minutes is None and state is not None
    start = state.started - 20 if whole_rollout and state is not None else end - 60 * (args.minutes or 30)
    try:
        files = render_report(
            PrometheusClient(controller.platform.prometheus_url),
            args.dashboard or _dashboard(),
            args.out,
            start=start,
            end=end,
            step=args.step,
            state=state,
        )
    except PrometheusError as err:
        print(f"avlops monitor report: {err}", file=sys.stderr)
        return ExitCode.FAILED
    for f in files:
        print(f)
    return ExitCode.OK

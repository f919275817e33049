"""The contract check as one call: check a manifest and its media, write the quarantine and the summary, judge the
gate. ``avlops data check``, the DVC ``check`` stage and the pipeline's check component all call
:func:`check_dataset`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avlops.data.manifest import CheckReport, check_manifest, write_quarantine
from avlops.data.params import CheckConfig

__all__ = ["CheckOutcome", "check_dataset"]


@dataclass(frozen=True)
class CheckOutcome:
    report: CheckReport
    summary: dict[str, Any]
    quarantine: Path
    summary_path: Path

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])

    def reason(self) -> str:
        """Why the gate failed ("" when it passed)."""
        if self.passed:
            return ""
        if self.report.total == 0:
            return "no records"
        return (
            f"too many bad records: {self.summary['bad_fraction']:.1%} bad "
            f"(limit {self.summary['max_bad_fraction']:.1%}); see {self.quarantine}"
        )


def check_dataset(cfg: CheckConfig, *, decode: bool = True) -> CheckOutcome:
    """Check ``cfg.manifest``; write ``quarantine.jsonl`` and ``summary.json`` to ``cfg.report_dir`` (default: the
    manifest's folder)."""
    manifest = Path(cfg.manifest)
    report = check_manifest(manifest, decode=decode)
    report_dir = Path(cfg.report_dir) if cfg.report_dir else manifest.parent
    summary = report.summary() | {
        "max_bad_fraction": cfg.max_bad_fraction,
        "passed": report.passed(cfg.max_bad_fraction),
    }
    quarantine = report_dir / "quarantine.jsonl"
    write_quarantine(quarantine, report.problems)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return CheckOutcome(report, summary, quarantine, report_dir / "summary.json")

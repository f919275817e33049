"""Run the validation suites: Great Expectations decides pass/fail, we map failing rows back to clips.

Outputs under ``cfg.out``: ``data_docs/index.html`` (the Data Docs site), ``summary.json`` (per expectation: success,
unexpected count, examples) and ``quarantine.jsonl`` (each failing clip with every reason). The gate fails when a
dataset-level expectation fails (or cannot run) or when the bad fraction exceeds ``max_bad_fraction``.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint.actions import UpdateDataDocsAction
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.core.expectation_validation_result import ExpectationValidationResult
from great_expectations.data_context.data_context.abstract_data_context import AbstractDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from avlops.data.manifest import Problem, write_quarantine
from avlops.validation.frames import manifest_frame, stats_frame
from avlops.validation.params import ValidateConfig
from avlops.validation.suites import DATASET, manifest_suite, stats_suite

__all__ = ["Outcome", "ValidationReport", "validate_dataset"]

#: The Data Docs site we build. An ephemeral context comes with one named "local_site" in a temp folder: not that.
DOCS_SITE = "avlops_validation"
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Outcome:
    """One expectation's result, in the shape ``summary.json`` stores it."""

    suite: str
    expectation: str
    column: str | None
    level: str  # "dataset" fails the gate on its own; "row" quarantines rows
    reason: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the expectation could not be evaluated (e.g. a missing column)

    @property
    def fails_dataset(self) -> bool:
        return not self.success and (self.level == "dataset" or self.error is not None)


@dataclass
class ValidationReport:
    """Every outcome, the quarantined clips and the gate's verdict."""

    config: ValidateConfig
    outcomes: list[Outcome]
    problems: list[Problem]
    total: int  # manifest lines, plus statistics rows of clips the manifest does not list
    bad: int
    clips_without_stats: int | None
    docs_index: Path
    summary_path: Path
    quarantine_path: Path

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.total if self.total else 0.0

    @property
    def failed_dataset(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.fails_dataset]

    @property
    def passed(self) -> bool:
        return self.total > 0 and not self.failed_dataset and self.bad_fraction <= self.config.max_bad_fraction

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "manifest": self.config.manifest,
            "stats": self.config.stats,
            "records": self.total,
            "quarantined": self.bad,
            "bad_fraction": round(self.bad_fraction, 6),
            "max_bad_fraction": self.config.max_bad_fraction,
            "failed_dataset_expectations": [f"{o.suite}: {o.reason}" for o in self.failed_dataset],
            "clips_without_stats": self.clips_without_stats,
            "data_docs": str(self.docs_index),
            "quarantine": str(self.quarantine_path),
            "expectations": [asdict(o) for o in self.outcomes],
        }


def _context(docs_dir: Path) -> AbstractDataContext:
    """An in-memory context whose only Data Docs site is ``docs_dir``; no analytics, no progress bars."""
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={DOCS_SITE: site},
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suite(
    context: AbstractDataContext, df: pd.DataFrame, suite: gx.ExpectationSuite, key: str
) -> ExpectationSuiteValidationResult:
    """Validate ``df`` with ``suite`` through a checkpoint that also updates the Data Docs site.

    Failing rows are reported by ``key`` (a line or row number) and clip id: that is what Data Docs shows, and how
    :func:`_collect` finds the rows again.
    """
    name = suite.name
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=context.suites.add(suite))
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
            # COMPLETE: every failing row, not a sample
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [key, *(["clip_id"] if "clip_id" in df else [])],
            },
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df})
    return next(iter(result.run_results.values()))


def _plain(v: Any) -> Any:
    """A JSON-friendly scalar: numpy scalars unwrapped, NaN and <NA> as None."""
    if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _error(r: ExpectationValidationResult) -> str | None:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return str(nested[0].get("exception_message")) if nested else None


def _collect(
    suite: str, result: ExpectationSuiteValidationResult, df: pd.DataFrame, key: str
) -> tuple[list[Outcome], dict[int, list[str]]]:
    """Outcomes of one suite run, and the reasons of every failing row (by DataFrame index)."""
    position = {k: i for i, k in enumerate(df[key])}
    outcomes: list[Outcome] = []
    reasons: dict[int, list[str]] = defaultdict(list)
    for r in result.results:
        conf = r.expectation_config
        if conf is None:  # only results of expectations run outside a suite lack it
            continue
        column = conf.kwargs.get("column")
        reason = str(conf.notes)
        detail = (conf.meta or {}).get("detail")
        examples: list[dict[str, Any]] = []
        for item in r.result.get("unexpected_index_list") or []:
            idx = position[item[key]]
            value = _plain(df.at[idx, column]) if column else None
            explained = f"{reason}: {df.at[idx, detail]}" if detail else f"{reason} ({column}={value!r})"
            reasons[int(idx)].append(explained)
            if len(examples) < MAX_EXAMPLES:
                ex = {key: _plain(item[key]), "clip_id": _plain(df.at[idx, "clip_id"]) if "clip_id" in df else None}
                ex["value"] = value
                examples.append(ex | ({"detail": str(df.at[idx, detail])} if detail else {}))
        outcomes.append(
            Outcome(
                suite=suite,
                expectation=conf.type,
                column=column,
                level="dataset" if conf.severity == DATASET else "row",
                reason=reason,
                success=bool(r.success),
                unexpected_count=_plain(r.result.get("unexpected_count")),
                unexpected_percent=_plain(r.result.get("unexpected_percent")),
                examples=examples,
                error=_error(r),
            )
        )
    return outcomes, reasons


def validate_dataset(cfg: ValidateConfig) -> ValidationReport:
    """Validate a manifest (and, when ``cfg.stats`` is set, its preprocessing statistics); write the reports."""
    manifest = Path(cfg.manifest)
    mdf, unreadable = manifest_frame(manifest, tuple(s.value for s in cfg.leak_splits))
    sdf: pd.DataFrame | None = None
    if cfg.stats is not None:
        stats_path = Path(cfg.stats)
        if not stats_path.is_file():
            raise FileNotFoundError(f"{stats_path}: statistics table not found")
        sdf = stats_frame(pd.read_parquet(stats_path), mdf)

    out = Path(cfg.out)
    docs_dir = (out / "data_docs").resolve()  # GE needs an absolute base_directory
    shutil.rmtree(docs_dir, ignore_errors=True)  # a fresh site: no pages left from earlier runs
    context = _context(docs_dir)

    outcomes, m_reasons = _collect("manifest", _run_suite(context, mdf, manifest_suite(cfg), "line"), mdf, "line")
    problems = list(unreadable)
    problems += [
        Problem(str(manifest), int(mdf.at[i, "line"]), _plain(mdf.at[i, "clip_id"]), tuple(rs))
        for i, rs in sorted(m_reasons.items())
    ]
    bad_rows = set(m_reasons)
    total = len(unreadable) + len(mdf)
    without_stats: int | None = None
    if sdf is not None:
        s_outcomes, s_reasons = _collect("stats", _run_suite(context, sdf, stats_suite(cfg), "row"), sdf, "row")
        outcomes += s_outcomes
        problems += [
            Problem(
                str(cfg.stats),
                int(sdf.at[i, "row"]),
                _plain(sdf.at[i, "clip_id"]) if "clip_id" in sdf else None,
                tuple(rs),
            )
            for i, rs in sorted(s_reasons.items())
        ]
        bad_ids = {sdf.at[i, "clip_id"] for i in s_reasons if "clip_id" in sdf}
        bad_rows |= set(mdf.index[mdf["clip_id"].isin(bad_ids)])
        orphans = int((~sdf["in_manifest"]).sum())  # stats of clips the manifest does not list: always bad
        total += orphans
        stats_ids = set(sdf["clip_id"]) if "clip_id" in sdf else set()
        without_stats = int((~mdf["clip_id"].isin(stats_ids)).sum())
    else:
        orphans = 0
    problems.sort(key=lambda p: (p.source, p.line or 0))

    report = ValidationReport(
        config=cfg,
        outcomes=outcomes,
        problems=problems,
        total=total,
        bad=len(unreadable) + len(bad_rows) + orphans,
        clips_without_stats=without_stats,
        docs_index=docs_dir / "index.html",
        summary_path=out / "summary.json",
        quarantine_path=out / "quarantine.jsonl",
    )
    write_quarantine(report.quarantine_path, problems)
    report.summary_path.write_text(json.dumps(report.summary(), indent=2, default=str) + "\n", encoding="utf-8")
    return report

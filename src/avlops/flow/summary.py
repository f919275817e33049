"""The run summary the exit handler writes: what ran, what was reused from the cache, what was skipped and why, and
what failed with its error, even when a task crashed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from avlops.flow.ledger import Ledger, StepRecord, StepStatus

__all__ = ["StageLine", "render_summary", "summarise"]

# the gates each stage sits behind, in pipeline order (a stage not listed is behind none)
_AFTER_VALIDATION = ("validation",)
_AFTER_BLESSING = ("validation", "blessing")
_GATED: dict[str, tuple[str, ...]] = {
    "features": _AFTER_VALIDATION,
    "train": _AFTER_VALIDATION,
    "evaluate": _AFTER_VALIDATION,
    "gate-blessing": _AFTER_VALIDATION,
    "catalogue": _AFTER_VALIDATION,
    "register": _AFTER_BLESSING,
    "publish": _AFTER_BLESSING,
    "deploy": _AFTER_BLESSING,
}


@dataclass(frozen=True)
class StageLine:
    stage: str
    status: str  # ran, failed, reused, skipped, not reached, crashed
    detail: str


def summarise(records: dict[str, StepRecord], stages: Sequence[str], state: str, error: str) -> list[StageLine]:
    """One line per expected stage, in pipeline order."""
    gates = {r.gate["name"]: r.gate for r in records.values() if r.gate}
    failed_at = next((s for s in stages if s in records and records[s].status is not StepStatus.SUCCEEDED), None)
    lines: list[StageLine] = []
    for i, stage in enumerate(stages):
        rec = records.get(stage)
        if rec is not None and rec.status is StepStatus.SUCCEEDED:
            lines.append(StageLine(stage, "ran", f"{rec.seconds:.1f} s" + "".join(f"; {n}" for n in rec.notes)))
            continue
        if rec is not None and rec.status is StepStatus.FAILED:
            lines.append(StageLine(stage, "failed", f"after {rec.seconds:.1f} s: {rec.error}"))
            continue
        if rec is not None:
            lines.append(StageLine(stage, "crashed", "started, never finished (the process died)"))
            continue
        gate = next((gates[g] for g in _GATED.get(stage, ()) if g in gates and not gates[g]["passed"]), None)
        if gate is not None:
            lines.append(StageLine(stage, "skipped", f"the {gate['name']} gate failed: " + "; ".join(gate["reasons"])))
        elif failed_at is not None and stages.index(failed_at) < i:
            lines.append(StageLine(stage, "not reached", f"{failed_at} failed"))
        elif any(s in records for s in stages[i + 1 :]) or state == "SUCCEEDED":
            lines.append(StageLine(stage, "reused", "up to date: its cached outputs from an earlier run were used"))
        else:
            lines.append(StageLine(stage, "not reached", error or f"the run ended {state}"))
    return lines


def render_summary(
    ledger: Ledger, stages: Sequence[str], *, pipeline: str, run: str, state: str, error: str = ""
) -> tuple[str, dict[str, str]]:
    """The Markdown run summary, and each stage's status."""
    records = ledger.read()
    lines = summarise(records, stages, state, error)
    out = [f"# {pipeline}: {state}", "", f"Run `{run}`.", ""]
    failed = [ln for ln in lines if ln.status in ("failed", "crashed")]
    if failed:
        out += [f"**{ln.stage} {ln.status}**: {ln.detail}" for ln in failed] + [""]
    elif state != "SUCCEEDED":  # a task failed before its step recorded anything (its wrapper, or a killed pod)
        out += [f"**a task failed before it recorded itself**: {error or 'no message'}; see the run's task logs", ""]
    out += ["| stage | status | detail |", "|---|---|---|"]
    out += [f"| {ln.stage} | {ln.status} | {ln.detail.replace('|', '/')} |" for ln in lines]
    return "\n".join(out) + "\n", {ln.stage: ln.status for ln in lines}

"""The blessing gate (TFX Evaluator → Pusher): may this model be registered?

:func:`bless` checks an evaluation's metrics against ``evaluate.bless`` (:class:`BlessingConfig`):

* **default** checks (``evaluate.bless.defaults``, on unless set to null), relative to chance: every text->clip task's
  R@1 at least ``r1_over_chance`` times chance (100 % / gallery size, capped halfway between chance and 100 %), and
  per captioning group at most ``max_empty`` % empty and ``max_degenerate`` % degenerate generated captions;
* **threshold** checks: ``metric >= min`` and/or ``metric <= max``;
* **champion** checks: no worse than the current champion's value by more than the metric's tolerance — for
  higher-is-better metrics ``value >= champion - tolerance``, for MedR/MeanR ``value <= champion + tolerance``.
  Without a champion (the first model) these checks are skipped and the verdict says so.

A check whose metric was not computed (a dataset without audio has no ``t2a``) fails, or is skipped with
``missing: skip``. The gate fails closed: when no check ran (defaults off, no thresholds, no champion) the model is
**not** blessed and the verdict says how to configure checks, unless ``unsafe_bless_without_checks`` is set
(``--unsafe-bless-without-checks``), which blesses and says so loudly.
The verdict lists every check and every reason and is stored as ``blessing.json`` beside ``metrics.json``::

    {"blessed": false,
     "reasons": ["retrieval/t2av/R@1 = 12.5 is below the threshold 20 (threshold)"],
     "checks": [{"metric": "retrieval/t2av/R@1", "kind": "threshold", "value": 12.5, "bound": 20.0,
                 "passed": false, "op": ">=", "champion": null, "tolerance": null, "reason": "..."}],
     "checkpoint": ".../checkpoints/step-00000020", "metrics_file": "metrics.json", "champion_file": null}

``value`` is null for a metric that was not computed. Registration reads it with :func:`read_verdict`. Light on
purpose (json only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from avlops.evaluation.names import caption_key, forward, higher_is_better, retrieval_key, retrieval_task_key
from avlops.evaluation.params import BlessingConfig, DefaultChecks
from avlops.evaluation.results import METRICS_NAME
from avlops.fileio import read_json_object, write_json_atomic
from avlops.modality import Modality

__all__ = ["BLESSING_NAME", "NO_CHECKS", "UNSAFE", "Check", "Verdict", "bless", "read_verdict", "write_verdict"]

BLESSING_NAME = "blessing.json"

CheckKind = Literal["default", "threshold", "champion"]

NO_CHECKS = (
    "no blessing check ran, so the model is NOT blessed: keep the default checks (evaluate.bless.defaults), add "
    "thresholds (evaluate.bless.thresholds in params.yaml, e.g. retrieval/t2av/R@1: {min: 20}, read with --params) "
    "or a champion (--champion); --unsafe-bless-without-checks blesses an unchecked model"
)
UNSAFE = "UNSAFE: no blessing check ran and the model was blessed anyway (--unsafe-bless-without-checks)"


@dataclass(frozen=True)
class Check:
    metric: str
    kind: CheckKind
    value: float | None  # None: the metric was not computed
    bound: float
    passed: bool
    op: Literal[">=", "<="]
    champion: float | None  # champion checks: the champion's value
    tolerance: float | None  # champion checks: the allowed regression
    reason: str


@dataclass(frozen=True)
class Verdict:
    blessed: bool
    reasons: list[str]  # why the verdict is what it is: every failed check, or why it passed
    checks: list[Check]
    checkpoint: str
    metrics_file: str = METRICS_NAME
    champion_file: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Verdict:
        need = ("blessed", "reasons", "checks", "checkpoint", "metrics_file")
        missing = [k for k in need if k not in data]
        if missing:
            raise ValueError(f"not a blessing verdict: missing {', '.join(missing)}")
        if not isinstance(data["blessed"], bool):
            raise ValueError("not a blessing verdict: 'blessed' must be true or false")
        check_keys = set(Check.__dataclass_fields__)
        checks = [Check(**{k: c.get(k) for k in check_keys}) for c in data["checks"]]
        return cls(
            blessed=data["blessed"],
            reasons=[str(r) for r in data["reasons"]],
            checks=checks,
            checkpoint=str(data["checkpoint"]),
            metrics_file=str(data["metrics_file"]),
            champion_file=data.get("champion_file"),
        )


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _check(
    metric: str,
    kind: CheckKind,
    value: float | None,
    bound: float,
    op: Literal[">=", "<="],
    champion: float | None = None,
    tolerance: float | None = None,
    why: str | None = None,
    what: str | None = None,
) -> Check:
    if what is None:
        what = (
            kind if champion is None or tolerance is None else f"champion {_fmt(champion)}, tolerance {_fmt(tolerance)}"
        )
    if value is None:
        passed, reason = False, f"{metric} was not computed{': ' + why if why else ''} ({what})"
    elif value >= bound if op == ">=" else value <= bound:
        passed, reason = True, f"{metric} = {_fmt(value)} {op} {_fmt(bound)} ({what})"
    else:
        side = "below" if op == ">=" else "above"
        passed, reason = False, f"{metric} = {_fmt(value)} is {side} the bound {_fmt(bound)} ({what})"
    return Check(metric, kind, value, bound, passed, op, champion, tolerance, reason)


def _why(not_computed: Mapping[str, str], metric: str) -> str | None:
    """The recorded reason a metric's task did not run (``retrieval-dsl/t2a/R@1`` -> ``retrieval/t2a``)."""
    task = metric.rsplit("/", 1)[0]  # a skipped retrieval task has no DSL rows either
    return not_computed.get(task) or not_computed.get(task.replace("retrieval-dsl/", "retrieval/", 1))


def default_checks(
    metrics: Mapping[str, float], defaults: DefaultChecks, tasks: Mapping[str, Mapping[str, int]]
) -> list[Check]:
    """The chance-relative checks on what was computed: R@1 of every text->clip task with a known gallery size, and
    the empty / degenerate caption shares of every captioning group."""
    checks = []
    for m in Modality:
        key, gallery = retrieval_key(forward(m), "R@1"), tasks.get(retrieval_task_key(forward(m)), {}).get("gallery")
        if key in metrics and gallery:
            chance = 100.0 / gallery
            bound = min(defaults.r1_over_chance * chance, 50.0 + chance / 2)
            what = f"default: {_fmt(defaults.r1_over_chance)}x chance {_fmt(chance)} % of a {gallery}-clip gallery"
            checks.append(_check(key, "default", metrics[key], bound, ">=", what=what))
    for m in Modality:
        for name, bound in (("empty", defaults.max_empty), ("degenerate", defaults.max_degenerate)):
            key = caption_key(m, name)
            if key in metrics:
                what = f"default: at most {_fmt(bound)} % {name} captions"
                checks.append(_check(key, "default", metrics[key], bound, "<=", what=what))
    return checks


def bless(
    metrics: Mapping[str, float],
    cfg: BlessingConfig,
    checkpoint: str,
    champion: Mapping[str, float] | None = None,
    champion_file: str | None = None,
    not_computed: Mapping[str, str] | None = None,
    tasks: Mapping[str, Mapping[str, int]] | None = None,
) -> Verdict:
    """Run every configured check on ``metrics`` (and against ``champion``'s metrics when given).

    ``not_computed`` (task -> reason, ``metrics.json``'s ``skipped``) explains checks on metrics that are absent;
    ``tasks`` (``metrics.json``'s ``tasks``: gallery sizes) sets the chance level of the default checks.
    """
    checks: list[Check] = []
    if cfg.defaults is not None and cfg.defaults.enabled:
        checks += default_checks(metrics, cfg.defaults, tasks or {})
    notes: list[str] = []
    why = dict(not_computed or {})
    for metric, b in cfg.thresholds.items():
        value = metrics.get(metric)
        if b.min is not None:
            checks.append(_check(metric, "threshold", value, b.min, ">=", why=_why(why, metric)))
        if b.max is not None:
            checks.append(_check(metric, "threshold", value, b.max, "<=", why=_why(why, metric)))
    if champion is None:
        if cfg.max_regression:
            notes.append(f"no champion to compare with: {len(cfg.max_regression)} champion check(s) skipped")
    else:
        for metric, tol in cfg.max_regression.items():
            ref = champion.get(metric)
            if ref is None:
                notes.append(f"{metric}: the champion has no value; champion check skipped")
                continue
            up = higher_is_better(metric)
            bound = ref - tol if up else ref + tol
            op: Literal[">=", "<="] = ">=" if up else "<="
            checks.append(_check(metric, "champion", metrics.get(metric), bound, op, ref, tol, _why(why, metric)))

    if cfg.missing == "skip":
        skipped = [c for c in checks if c.value is None]
        notes += [f"{c.metric} was not computed: {c.kind} check skipped" for c in skipped]
        checks = [c for c in checks if c.value is not None]
    failed = [c for c in checks if not c.passed]
    if failed:
        reasons = [c.reason for c in failed]
    elif checks:
        reasons = [f"all {len(checks)} check(s) passed"]
    else:
        reasons = [UNSAFE if cfg.unsafe_bless_without_checks else NO_CHECKS]
    return Verdict(
        blessed=not failed and (bool(checks) or cfg.unsafe_bless_without_checks),
        reasons=reasons + notes,
        checks=checks,
        checkpoint=checkpoint,
        champion_file=champion_file,
    )


def write_verdict(out_dir: Path, verdict: Verdict) -> Path:
    """Write ``out_dir/blessing.json`` (atomically) and return its path."""
    path = out_dir / BLESSING_NAME
    write_json_atomic(path, verdict.to_json_dict())
    return path


def read_verdict(path: str | Path) -> Verdict:
    """Read a ``blessing.json`` (or the evaluation folder holding one); raises FileNotFoundError or ValueError."""
    p = Path(path)
    if p.is_dir():
        p = p / BLESSING_NAME
    data = read_json_object(p, what="blessing verdict", hint=" (run `avlops evaluate` first)")
    try:
        return Verdict.from_json_dict(data)
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{p}: {err}") from err

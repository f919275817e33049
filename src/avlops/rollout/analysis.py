"""Analysis runs with Argo Rollouts' semantics: measurements, metric results and the run's result.

A measurement asks a provider for the metric's value (a list of floats, one per series) and judges it:

- **Failed** when ``failureCondition`` holds, or when only ``successCondition`` is given and it does not;
- **Successful** when ``successCondition`` holds, or when only ``failureCondition`` is given and it does not;
- **Inconclusive** when both are given and neither holds (e.g. no traffic yet: ``NaN`` compares false both ways);
- **Error** when the provider failed (Prometheus unreachable, a bad query) or a condition could not be evaluated on
  the value (``result[0]`` of an empty result). Errors are never a success: they count, with the inconclusive
  measurements, against ``inconclusiveLimit``.

A metric takes ``count`` measurements ``interval`` apart and ends early as **Failed** once more than ``failureLimit``
measurements failed, or as **Inconclusive** (**Error** when the last one was an error) once more than
``inconclusiveLimit`` were inconclusive or errors; after ``count`` measurements within budget it is **Successful**.
A run's result is its worst metric's: Failed > Error > Inconclusive > Successful. The controller aborts on Failed and
pauses for a person on Inconclusive or Error.

The run is plain data (:class:`AnalysisRun`), persisted by the controller after every measurement, so a controller that
was killed continues the same run where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from avlops.rollout.conditions import ConditionError, evaluate_condition
from avlops.rollout.spec import AnalysisTemplate, Metric, Phase

__all__ = [
    "AnalysisRun",
    "Measurement",
    "MeasurementError",
    "MetricRun",
    "Provider",
    "judge",
    "metric_phase",
    "run_phase",
]


class MeasurementError(RuntimeError):
    """The provider could not give a value (unreachable, refused query); the measurement is an Error."""


#: ``provider(metric, args) -> values``: one float per series the metric's query returned.
Provider = Callable[[Metric, dict[str, str]], list[float]]


class Measurement(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")  # NaN (no traffic) survives the state file

    at: float  # unix seconds
    phase: Phase
    value: list[float] = Field(default_factory=list)
    message: str = ""


class MetricRun(BaseModel):
    name: str
    measurements: list[Measurement] = Field(default_factory=list)
    phase: Phase = Phase.RUNNING

    def count(self, phase: Phase) -> int:
        return sum(1 for m in self.measurements if m.phase == phase)


class AnalysisRun(BaseModel):
    """One analysis step's run of one template (the controller's persisted record)."""

    template: str
    step: int
    args: dict[str, str]
    started: float
    metrics: list[MetricRun]
    phase: Phase = Phase.RUNNING

    @classmethod
    def begin(cls, template: AnalysisTemplate, step: int, args: dict[str, str], now: float) -> AnalysisRun:
        metrics = [MetricRun(name=m.name) for m in template.metrics]
        return cls(template=template.name, step=step, args=args, started=now, metrics=metrics)

    def due(self, template: AnalysisTemplate, now: float) -> list[tuple[Metric, MetricRun]]:
        """The metrics whose next measurement is due at ``now``."""
        out = []
        for metric, mrun in zip(template.metrics, self.metrics, strict=True):
            if mrun.phase != Phase.RUNNING:
                continue
            if now >= self.next_at(metric, mrun):
                out.append((metric, mrun))
        return out

    def next_at(self, metric: Metric, mrun: MetricRun) -> float:
        if not mrun.measurements:
            return self.started + metric.initial_delay_s
        return mrun.measurements[-1].at + metric.interval_s

    def wake_at(self, template: AnalysisTemplate) -> float | None:
        """When the next measurement is due (None when the run is over)."""
        times = [
            self.next_at(m, r) for m, r in zip(template.metrics, self.metrics, strict=True) if r.phase == Phase.RUNNING
        ]
        return min(times) if times else None

    def step_once(self, template: AnalysisTemplate, provider: Provider, now: float | None = None) -> bool:
        """Take every due measurement; returns whether anything changed. Updates :attr:`phase`."""
        now = time.time() if now is None else now
        changed = False
        for metric, mrun in self.due(template, now):
            mrun.measurements.append(measure(metric, self.args, provider, now))
            mrun.phase = metric_phase(metric, mrun.measurements)
            changed = True
        self.phase = run_phase([m.phase for m in self.metrics])
        return changed


def judge(metric: Metric, values: Sequence[float]) -> tuple[Phase, str]:
    """One measurement's phase from its values (see the module docstring)."""
    try:
        failed = metric.failure_condition is not None and evaluate_condition(metric.failure_condition, values)
        succeeded = metric.success_condition is not None and evaluate_condition(metric.success_condition, values)
    except ConditionError as err:
        return Phase.ERROR, str(err)
    if failed:
        return Phase.FAILED, f"failureCondition {metric.failure_condition!r} holds"
    if metric.success_condition is not None and metric.failure_condition is not None:
        if succeeded:
            return Phase.SUCCESSFUL, ""
        return Phase.INCONCLUSIVE, "neither condition holds"
    if metric.success_condition is not None and not succeeded:
        return Phase.FAILED, f"successCondition {metric.success_condition!r} does not hold"
    return Phase.SUCCESSFUL, ""


def measure(metric: Metric, args: dict[str, str], provider: Provider, now: float) -> Measurement:
    try:
        values = provider(metric, args)
    except MeasurementError as err:
        return Measurement(at=now, phase=Phase.ERROR, message=str(err))
    phase, message = judge(metric, values)
    return Measurement(at=now, phase=phase, value=list(values), message=message)


def metric_phase(metric: Metric, measurements: Sequence[Measurement]) -> Phase:
    """The metric's phase after these measurements: Running until it is decided."""
    failed = sum(1 for m in measurements if m.phase == Phase.FAILED)
    unclear = sum(1 for m in measurements if m.phase in (Phase.INCONCLUSIVE, Phase.ERROR))
    if failed > metric.failure_limit:
        return Phase.FAILED
    if unclear > metric.inconclusive_limit:
        return Phase.ERROR if measurements[-1].phase == Phase.ERROR else Phase.INCONCLUSIVE
    if len(measurements) >= metric.measurements:
        return Phase.SUCCESSFUL
    return Phase.RUNNING


_SEVERITY = [Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE, Phase.RUNNING, Phase.SUCCESSFUL]


def run_phase(phases: Sequence[Phase]) -> Phase:
    """A run's phase: Failed as soon as one metric failed, else Running while any runs, else the worst."""
    if Phase.FAILED in phases:
        return Phase.FAILED
    if Phase.RUNNING in phases:
        return Phase.RUNNING
    return min(phases, key=_SEVERITY.index) if phases else Phase.SUCCESSFUL

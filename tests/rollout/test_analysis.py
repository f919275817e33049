"""Analysis semantics (Argo's): measurement phases from the conditions, failure and inconclusive budgets, errors
counted against the inconclusive budget, and the run's worst-of result."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from avlops.rollout.analysis import AnalysisRun, MeasurementError, judge, run_phase
from avlops.rollout.spec import AnalysisTemplate, Metric, Phase

BOTH = {"successCondition": "result[0] <= 0.05", "failureCondition": "result[0] > 0.05"}


def _metric(**kw: object) -> Metric:
    base: dict[str, object] = {"name": "m", "provider": {"prometheus": {"query": "q"}}, **BOTH}
    base.update(kw)
    return Metric.model_validate(base)


@pytest.mark.parametrize(
    ("conditions", "value", "phase"),
    [
        (BOTH, [0.01], Phase.SUCCESSFUL),
        (BOTH, [0.5], Phase.FAILED),
        (BOTH, [math.nan], Phase.INCONCLUSIVE),  # no traffic: neither holds
        (BOTH, [], Phase.ERROR),  # the query returned no series
        ({"successCondition": "result[0] <= 0.05", "failureCondition": None}, [math.nan], Phase.FAILED),
        ({"successCondition": None, "failureCondition": "result[0] > 0.05"}, [0.01], Phase.SUCCESSFUL),
    ],
)
def test_judge(conditions: dict[str, str | None], value: list[float], phase: Phase) -> None:
    assert judge(_metric(**conditions), value)[0] == phase


def _run(metric: Metric, values: list[object]) -> tuple[AnalysisRun, int]:
    """Drive one metric's run with a provider that answers ``values`` in turn (an exception = unreachable)."""
    template = AnalysisTemplate(name="t", metrics=(metric,))
    answers: Iterator[object] = iter(values)

    def provider(_m: Metric, _args: dict[str, str]) -> list[float]:
        v = next(answers)
        if isinstance(v, Exception):
            raise v
        return v  # type: ignore[return-value]

    run = AnalysisRun.begin(template, 1, {}, now=0.0)
    now, taken = 0.0, 0
    while run.phase == Phase.RUNNING:
        wake = run.wake_at(template)
        assert wake is not None
        now = max(now, wake)
        taken += run.step_once(template, provider, now)
    return run, len(run.metrics[0].measurements)


def test_successful_after_count_measurements_spaced_by_interval() -> None:
    run, taken = _run(_metric(count=3, interval="10s"), [[0.0], [0.01], [0.02]])
    assert (run.phase, taken) == (Phase.SUCCESSFUL, 3)
    assert [m.at for m in run.metrics[0].measurements] == [0.0, 10.0, 20.0]


def test_failure_limit() -> None:
    run, taken = _run(_metric(count=5, interval="1s", failureLimit=1), [[0.0], [0.9], [0.0], [0.9]])
    assert (run.phase, taken) == (Phase.FAILED, 4)


def test_inconclusive_limit() -> None:
    run, taken = _run(_metric(count=5, interval="1s", inconclusiveLimit=1), [[math.nan], [0.0], [math.nan]])
    assert (run.phase, taken) == (Phase.INCONCLUSIVE, 3)


def test_prometheus_unreachable_is_an_error_counted_against_the_inconclusive_limit_never_a_success() -> None:
    down = MeasurementError("http://127.0.0.1:9: unreachable")
    run, taken = _run(_metric(count=3, interval="1s", inconclusiveLimit=1), [[0.0], down, down])
    assert (run.phase, taken) == (Phase.ERROR, 3)
    assert run.metrics[0].measurements[1].message.endswith("unreachable")
    run, _ = _run(_metric(count=3, interval="1s", inconclusiveLimit=1), [down, [0.0], [0.0]])
    assert run.phase == Phase.SUCCESSFUL  # within the budget


def test_initial_delay() -> None:
    template = AnalysisTemplate(name="t", metrics=(_metric(initialDelay="30s"),))
    run = AnalysisRun.begin(template, 0, {}, now=100.0)
    assert run.wake_at(template) == 130.0
    assert not run.step_once(template, lambda _m, _a: [0.0], now=110.0)


def test_run_phase_is_the_worst() -> None:
    s, f, e, i, r = Phase.SUCCESSFUL, Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE, Phase.RUNNING
    assert run_phase([s, i, e]) == e
    assert run_phase([s, i]) == i
    assert run_phase([r, f]) == f  # a failure ends the run at once
    assert run_phase([r, i]) == r
    assert run_phase([s, s]) == s


def test_a_run_survives_a_round_trip_through_json_with_nan() -> None:
    template = AnalysisTemplate(name="t", metrics=(_metric(count=2, interval="1s"),))
    run = AnalysisRun.begin(template, 0, {"a": "b"}, now=0.0)
    run.step_once(template, lambda _m, _a: [math.nan], now=0.0)
    again = AnalysisRun.model_validate_json(run.model_dump_json())
    assert math.isnan(again.metrics[0].measurements[0].value[0])
    assert again.metrics[0].measurements[0].phase == Phase.INCONCLUSIVE


def test_prometheus_unreachable_is_a_measurement_error() -> None:
    from avlops.rollout.controller import prometheus_provider
    from avlops.serving.server import free_port

    metric = _metric()
    provider = prometheus_provider(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(MeasurementError, match="unreachable"):
        provider(metric, {})
    template = AnalysisTemplate(name="t", metrics=(metric,))
    run = AnalysisRun.begin(template, 0, {}, now=0.0)
    run.step_once(template, provider, now=0.0)
    assert run.metrics[0].measurements[0].phase == Phase.ERROR
    assert run.phase == Phase.ERROR  # inconclusiveLimit 0: one error ends the metric, never a success

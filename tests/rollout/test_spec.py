"""The rollout spec: the default file loads with Argo's field names; bad files are refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from avlops.config import ConfigError
from avlops.rollout.spec import load_rollout, parse_duration, render_query

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "rollout" / "default.yaml"


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT.read_text())


def test_the_default_rollout_loads() -> None:
    spec = load_rollout(DEFAULT)
    assert [s.kind for s in spec.steps] == ["setWeight", "analysis", "setWeight", "analysis"]
    assert spec.steps[0].set_weight == 20
    health = spec.template("canary-health")
    error = health.metrics[0]
    assert (error.measurements, error.interval_s, error.failure_limit, error.inconclusive_limit) == (3, 10.0, 0, 2)
    args = spec.resolved_args(spec.steps[1].analysis, health, {})  # type: ignore[arg-type]
    assert 'track="canary"' in render_query(error.provider.queries()[0], args)


def test_pause_with_and_without_duration(tmp_path: Path) -> None:
    data = _base()
    data["strategy"]["canary"]["steps"] = [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"pause": {}}]
    spec = load_rollout(_write(tmp_path, data))
    assert [s.pause.seconds if s.pause else None for s in spec.steps] == [None, 60.0, None]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="red"), "colour: Extra inputs are not permitted"),
        (
            lambda d: d["strategy"]["canary"]["steps"].append({"setWeight": 10, "pause": {}}),
            "exactly one of setWeight, pause, analysis",
        ),
        (lambda d: d["strategy"]["canary"]["steps"].append({"setWeight": 120}), "setWeight: Input should be less"),
        (
            lambda d: d["strategy"]["canary"]["steps"].append({"pause": {"duration": "soon"}}),
            "a duration is a number with ms, s, m or h",
        ),
        (
            lambda d: d["strategy"]["canary"]["steps"].append({"analysis": {"templates": [{"templateName": "nope"}]}}),
            "no analysis template 'nope'",
        ),
        (
            lambda d: d["analysisTemplates"][0]["metrics"][0].update(successCondition="__import__('os')"),
            "successCondition",
        ),
        (
            lambda d: d["analysisTemplates"][0]["metrics"][0].update(failureLimit=-1),
            "failureLimit: Input should be greater than or equal to 0",
        ),
        (
            lambda d: d["analysisTemplates"][0]["metrics"][0]["provider"]["prometheus"].update(
                query="up{x='{{args.missing}}'}"
            ),
            "args ['missing'] that the template does not declare",
        ),
        (
            lambda d: d["analysisTemplates"][0]["metrics"][0].pop("interval"),
            "count 3 needs an interval",
        ),
        (
            lambda d: [
                d["analysisTemplates"][0]["metrics"][0].pop(k) for k in ("successCondition", "failureCondition")
            ],
            "give a successCondition, a failureCondition or both",
        ),
        (lambda d: d["analysisTemplates"][0]["metrics"][0].update(provider={}), "exactly one provider"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(tmp_path: Path, change: Any, message: str) -> None:
    data = _base()
    change(data)
    with pytest.raises(ConfigError) as err:
        load_rollout(_write(tmp_path, data))
    assert message in str(err.value)
    assert str(tmp_path / "rollout.yaml") in str(err.value)


def test_an_argument_without_a_value_must_be_given_by_the_step(tmp_path: Path) -> None:
    data = _base()
    data["analysisTemplates"][1]["args"][0] = {"name": "k"}
    with pytest.raises(ConfigError, match=r"template 'canary-quality' needs values for args \['k'\]"):
        load_rollout(_write(tmp_path, data))
    data["strategy"]["canary"]["steps"][1]["analysis"]["args"] = [{"name": "k", "value": 10}]
    spec = load_rollout(_write(tmp_path, data))
    step = spec.steps[1].analysis
    assert step is not None
    runtime = {"canary-version": "4", "stable-version": "3", "canary-cluster": "green"}
    assert spec.resolved_args(step, spec.template("canary-quality"), runtime) == {
        "k": "10",
        "canary-version": "4",
        "stable-version": "3",
    }


def test_durations() -> None:
    assert [parse_duration(t) for t in ("500ms", "30s", "1.5m", "2h", 7)] == [0.5, 30.0, 90.0, 7200.0, 7.0]
    with pytest.raises(ValueError, match="duration"):
        parse_duration("10 minutes")

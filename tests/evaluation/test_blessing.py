"""The blessing gate's decisions on crafted metric sets, its config validation, and the verdict file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from evaluation_data import REPO
from pydantic import ValidationError

from avlops.config import load_section
from avlops.evaluation.blessing import NO_CHECKS, UNSAFE, bless, read_verdict, write_verdict
from avlops.evaluation.names import all_metric_names
from avlops.evaluation.params import BlessingConfig, EvaluateConfig
from avlops.params import ProjectParams

METRICS = {
    "retrieval/t2av/R@1": 42.0,
    "retrieval/t2av/MedR": 2.0,
    "retrieval/t2v/R@1": 30.0,
    "captioning/av/CIDEr": 55.0,
}


def cfg(**kw: Any) -> BlessingConfig:
    return BlessingConfig.model_validate(kw)


def test_thresholds_pass_and_fail_with_every_reason() -> None:
    ok = bless(METRICS, cfg(thresholds={"retrieval/t2av/R@1": {"min": 40}, "retrieval/t2av/MedR": {"max": 2}}), "ck")
    assert ok.blessed and ok.reasons == ["all 2 check(s) passed"]
    assert [(c.metric, c.op, c.bound, c.passed) for c in ok.checks] == [
        ("retrieval/t2av/R@1", ">=", 40.0, True),
        ("retrieval/t2av/MedR", "<=", 2.0, True),  # the bound itself passes
    ]
    bad = bless(
        METRICS,
        cfg(thresholds={"retrieval/t2av/R@1": {"min": 50, "max": 90}, "captioning/av/CIDEr": {"min": 60}}),
        "ck",
    )
    assert not bad.blessed and len(bad.checks) == 3
    assert bad.reasons == [
        "retrieval/t2av/R@1 = 42 is below the bound 50 (threshold)",
        "captioning/av/CIDEr = 55 is below the bound 60 (threshold)",
    ]


def test_champion_checks_respect_direction_and_tolerance() -> None:
    champion = {"retrieval/t2av/R@1": 43.0, "retrieval/t2av/MedR": 1.0, "captioning/av/CIDEr": 50.0}
    gate = cfg(max_regression={"retrieval/t2av/R@1": 1.0, "retrieval/t2av/MedR": 0.0, "captioning/av/CIDEr": 0.0})
    v = bless(METRICS, gate, "ck", champion=champion, champion_file="champ/metrics.json")
    by = {c.metric: c for c in v.checks}
    assert by["retrieval/t2av/R@1"].passed and by["retrieval/t2av/R@1"].bound == 42.0  # 43 - 1: exactly at the bound
    assert not by["retrieval/t2av/MedR"].passed and by["retrieval/t2av/MedR"].op == "<="  # 2 > 1 + 0: a regression
    assert by["captioning/av/CIDEr"].passed  # better than the champion
    assert not v.blessed and v.reasons == ["retrieval/t2av/MedR = 2 is above the bound 1 (champion 1, tolerance 0)"]
    assert v.champion_file == "champ/metrics.json" and by["retrieval/t2av/MedR"].champion == 1.0


def test_no_champion_skips_champion_checks_and_says_so() -> None:
    v = bless(METRICS, cfg(max_regression={"retrieval/t2av/R@1": 0.0}), "ck", champion=None)
    assert not v.blessed and v.checks == []  # nothing else was checked: fail closed
    assert "no champion to compare with: 1 champion check(s) skipped" in v.reasons
    w = bless(METRICS, cfg(max_regression={"retrieval/t2a/R@1": 0.0}), "ck", champion={"retrieval/t2av/R@1": 1.0})
    assert not w.blessed and "retrieval/t2a/R@1: the champion has no value; champion check skipped" in w.reasons


def test_missing_metrics_fail_or_are_skipped() -> None:
    gate = {"thresholds": {"retrieval/t2a/R@1": {"min": 10}}}  # e.g. a dataset without audio
    v = bless(METRICS, cfg(**gate), "ck")
    assert not v.blessed and v.checks[0].value is None
    assert v.reasons == ["retrieval/t2a/R@1 was not computed (threshold)"]
    s = bless(METRICS, cfg(**gate, missing="skip"), "ck")
    assert not s.blessed and s.checks == [] and s.reasons[0] == NO_CHECKS
    assert "retrieval/t2a/R@1 was not computed: threshold check skipped" in s.reasons


def test_no_checks_is_not_blessed_unless_the_unsafe_opt_out_is_set() -> None:
    """Issue 12 point 1: with nothing to check, the gate used to bless "without conditions"."""
    v = bless(METRICS, BlessingConfig(), "ck")  # defaults on, but no gallery size and no caption quality: no check
    assert not v.blessed and v.checks == [] and v.reasons == [NO_CHECKS]
    assert "evaluate.bless.thresholds" in NO_CHECKS and "--unsafe-bless-without-checks" in NO_CHECKS
    u = bless(METRICS, cfg(unsafe_bless_without_checks=True), "ck")
    assert u.blessed and u.reasons == [UNSAFE] and "UNSAFE" in UNSAFE
    # the opt-out never overrides a failed check
    f = bless(METRICS, cfg(unsafe_bless_without_checks=True, thresholds={"retrieval/t2av/R@1": {"min": 90}}), "ck")
    assert not f.blessed


NEAR_CHANCE = {  # a 15-clip gallery (chance 6.7 %) and captions that say nothing, as in issue 12
    "retrieval/t2av/R@1": 8.0,
    "retrieval/t2v/R@1": 7.0,
    "captioning/av/CIDEr": 3.0,
    "captioning/av/empty": 100.0,
    "captioning/av/degenerate": 100.0,
}
TASKS = {"retrieval/t2av": {"queries": 30, "gallery": 15}, "retrieval/t2v": {"queries": 30, "gallery": 15}}


def test_default_checks_are_relative_to_chance_and_refuse_empty_captions() -> None:
    v = bless(NEAR_CHANCE, BlessingConfig(), "ck", tasks=TASKS)
    assert not v.blessed and {c.kind for c in v.checks} == {"default"}
    by = {c.metric: c for c in v.checks}
    assert by["retrieval/t2av/R@1"].bound == pytest.approx(20.0)  # 3 x 100 / 15
    assert "3x chance 6.667 % of a 15-clip gallery" in by["retrieval/t2av/R@1"].reason
    assert not by["captioning/av/empty"].passed and not by["captioning/av/degenerate"].passed
    good = {**NEAR_CHANCE, "retrieval/t2av/R@1": 80.0, "retrieval/t2v/R@1": 30.0}
    good |= {"captioning/av/empty": 0.0, "captioning/av/degenerate": 0.0}
    assert bless(good, BlessingConfig(), "ck", tasks=TASKS).blessed  # a default run can bless a good model
    # a 2-clip gallery: 3 x chance would be 150 %; the bound is capped halfway between chance and 100 %
    tiny = bless({"retrieval/t2v/R@1": 80.0}, BlessingConfig(), "ck", tasks={"retrieval/t2v": {"gallery": 2}})
    assert tiny.checks[0].bound == 75.0 and tiny.blessed
    assert bless(NEAR_CHANCE, cfg(defaults=None), "ck", tasks=TASKS).reasons == [NO_CHECKS]
    # {enabled: false}, the form a pipeline parameter can hold (it cannot hold null), means the same
    assert bless(NEAR_CHANCE, cfg(defaults={"enabled": False}), "ck", tasks=TASKS).reasons == [NO_CHECKS]


def test_config_rejects_unknown_metric_names_and_bad_bounds() -> None:
    with pytest.raises(ValidationError, match=r"unknown metric name.*retrieval/t2av/R@2"):
        cfg(thresholds={"retrieval/t2av/R@2": {"min": 1}})
    with pytest.raises(ValidationError, match=r"unknown metric name.*captioning/video/CIDEr"):
        cfg(max_regression={"captioning/video/CIDEr": 1.0})
    with pytest.raises(ValidationError, match="needs min, max or both"):
        cfg(thresholds={"retrieval/t2av/R@1": {}})
    with pytest.raises(ValidationError, match=r"min 5\.0 is above max 1\.0"):
        cfg(thresholds={"retrieval/t2av/R@1": {"min": 5, "max": 1}})
    with pytest.raises(ValidationError, match="tolerances must be >= 0"):
        cfg(max_regression={"retrieval/t2av/R@1": -1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        EvaluateConfig.model_validate({"bless": {"threshold": {}}})


def test_every_metric_name_is_accepted() -> None:
    names = all_metric_names()
    assert len(names) == len(set(names)) == 2 * 6 * 6 + 3 * (4 + 5)
    cfg(thresholds={n: {"min": 0} for n in names})


def test_verdict_file_round_trips_with_the_agreed_keys(tmp_path: Path) -> None:
    v = bless(METRICS, cfg(thresholds={"retrieval/t2av/R@1": {"min": 50}}), "run/checkpoints/step-00000020")
    path = write_verdict(tmp_path, v)
    data = json.loads(path.read_text())
    assert path.name == "blessing.json"
    assert {"blessed", "reasons", "checks", "checkpoint", "metrics_file"} <= set(data)
    assert data["metrics_file"] == "metrics.json" and data["blessed"] is False
    assert {"metric", "kind", "value", "bound", "passed"} <= set(data["checks"][0])
    assert read_verdict(tmp_path) == v == read_verdict(path)


def test_read_verdict_names_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="blessing verdict not found"):
        read_verdict(tmp_path)
    (tmp_path / "blessing.json").write_text('{"blessed": "yes"}')
    with pytest.raises(ValueError, match="missing reasons, checks, checkpoint, metrics_file"):
        read_verdict(tmp_path)
    (tmp_path / "blessing.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable blessing verdict"):
        read_verdict(tmp_path)


def test_the_project_params_evaluate_section_loads() -> None:
    cfg = load_section(REPO / "params.yaml", None, ProjectParams).evaluate
    assert cfg.split == "test" and cfg.beam_size == 3 and cfg.bless.thresholds
    assert cfg.bless.defaults is not None and not cfg.bless.unsafe_bless_without_checks
    # the demo's thresholds still bless the demo model's figures (README: t2av R@1 ~80 %, CIDEr ~85, MedR 1)
    demo = {"retrieval/t2av/R@1": 80.0, "retrieval/t2av/MedR": 1.0, "captioning/av/CIDEr": 85.0}
    demo |= {"captioning/av/empty": 0.0, "captioning/av/degenerate": 0.0}
    assert bless(demo, cfg.bless, "ck", tasks={"retrieval/t2av": {"queries": 30, "gallery": 15}}).blessed

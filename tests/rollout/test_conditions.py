"""Analysis conditions: Argo's operators work, NaN and empty results behave, and nothing but the small grammar runs."""

from __future__ import annotations

import math

import pytest

from avlops.rollout.conditions import ConditionError, check_condition, evaluate_condition


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("result[0] <= 0.05", [0.01], True),
        ("result[0] <= 0.05", [0.2], False),
        ("result[0] <= 0.05 && !isNaN(result[0])", [math.nan], False),
        ("isNaN(result[0]) || result[0] < 1", [math.nan], True),
        ("len(result) == 0 || result[0] != 1", [1.0], False),
        ("all(result) and any(result)", [1.0, 2.0], True),
        ("result[-1] - result[0] >= 1", [1.0, 2.5], True),
        ("0 < result[0] < 1", [0.5], True),
        ("max(result[0], result[1]) / 2 == 1.5", [1.0, 3.0], True),
        ("result[0] / 0 > 1e9", [1.0], True),
        ("result[0] == true", [1.0], True),
    ],
)
def test_conditions_evaluate(condition: str, result: list[float], expected: bool) -> None:
    assert evaluate_condition(condition, result) is expected


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ('__import__("os").system("true")', "functions"),
        ("result.__class__", "Attribute"),
        ("result[0] if result else 1", "IfExp"),
        ('"a" == "a"', "only numbers"),
        ("x > 1", "unknown name 'x'"),
        ("result[0:1] == 1", "only result[<integer>]"),
        ("[c for c in result]", "ListComp"),
        ("lambda: 1", "Lambda"),
        ("len(result, key=1)", "keyword"),
        ("result[0] >", "cannot parse"),
        ("   ", "empty"),
    ],
)
def test_unsafe_or_broken_conditions_are_refused(condition: str, reason: str) -> None:
    with pytest.raises(ConditionError, match=reason.replace("[", r"\[").replace("(", r"\(")):
        check_condition(condition)


def test_an_empty_result_is_an_error_not_false() -> None:
    with pytest.raises(ConditionError, match="out of range"):
        evaluate_condition("result[0] > 0.05", [])

"""The Mann–Whitney canary-vs-stable comparison: a worse canary gets a small p-value, an equal one does not."""

from __future__ import annotations

import math

import numpy as np

from avlops.rollout.compare import compare_samples


def test_a_slower_canary_is_found_and_an_equal_one_is_not() -> None:
    rng = np.random.default_rng(0)
    stable = list(rng.normal(10, 1, 30))
    assert compare_samples(list(rng.normal(14, 1, 30)), stable, "increase") < 0.001
    assert compare_samples(list(rng.normal(10, 1, 30)), stable, "increase") > 0.05
    assert compare_samples(list(rng.normal(6, 1, 30)), stable, "increase") > 0.99  # faster is not worse


def test_direction_decrease_for_quality() -> None:
    assert compare_samples([0.2, 0.3, 0.25, 0.2], [0.9, 0.8, 0.85, 0.9], "decrease") < 0.05


def test_too_few_samples_is_nan_and_constant_samples_are_no_evidence() -> None:
    assert math.isnan(compare_samples([1.0, 2.0], [1.0, 2.0, 3.0]))
    assert compare_samples([0.0] * 5, [0.0] * 5) == 1.0

"""Segment sampling matches VALOR's ``split()`` + random/middle picks; per-clip generators are stable."""

from __future__ import annotations

import random

import numpy as np
import pytest

from avlops.preprocessing.sampling import clip_rng, draws, sampled_mask, segment_groups, segment_indices


def valor_split(items: list[int], sample_num: int) -> list[list[int]]:
    """VALOR ``data/data.py::split``, verbatim in behaviour (reference for the test)."""
    if len(items) < sample_num:
        items = items + [items[-1]] * (sample_num - len(items))
    k, m = divmod(len(items), sample_num)
    return [items[i * k + min(i, m) : (i + 1) * k + min(i + 1, m)] for i in range(sample_num)]


@pytest.mark.parametrize("n_items", [1, 2, 3, 7, 8, 9, 24, 100])
@pytest.mark.parametrize("n_samples", [1, 4, 8])
def test_groups_and_middle_picks_match_valor(n_items: int, n_samples: int) -> None:
    ref = valor_split(list(range(n_items)), n_samples)
    assert segment_groups(n_items, n_samples) == ref
    assert segment_indices(n_items, n_samples, None) == [g[(len(g) + 1) // 2 - 1] for g in ref]
    assert sampled_mask(n_items, n_samples) == [i < n_items for i in range(n_samples)]


def test_random_picks_stay_in_their_segment_and_cover_it() -> None:
    rng = np.random.default_rng(0)
    groups = segment_groups(24, 4)  # [0..5], [6..11], ...
    seen: list[set[int]] = [set() for _ in groups]
    for _ in range(200):
        for g, i in zip(groups, segment_indices(24, 4, draws(4, True, rng)), strict=True):
            assert i in g
            seen[groups.index(g)].add(i)
    assert all(s == set(g) for s, g in zip(seen, groups, strict=True))  # every frame of a segment can be drawn


def test_fewer_items_than_samples_repeats_the_last() -> None:
    assert segment_indices(3, 6, None) == [0, 1, 2, 2, 2, 2]
    assert segment_indices(3, 6, np.full(6, 0.99)) == [0, 1, 2, 2, 2, 2]
    assert sampled_mask(3, 6) == [True, True, True, False, False, False]


def test_clip_rng_depends_only_on_seed_and_id() -> None:
    a = clip_rng(0, "clip-1").random(4)
    random.seed(123)  # global state must not matter
    np.random.seed(5)
    assert np.array_equal(a, clip_rng(0, "clip-1").random(4))
    assert not np.array_equal(a, clip_rng(1, "clip-1").random(4))
    assert not np.array_equal(a, clip_rng(0, "clip-2").random(4))


def test_training_draws_need_a_generator() -> None:
    assert draws(3, False, None) is None
    with pytest.raises(ValueError):
        draws(3, True, None)

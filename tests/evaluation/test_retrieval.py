"""Retrieval metrics against hand-computed rankings and against VALOR's own sort-based ``compute_metric_ret``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from avlops.evaluation.retrieval import (
    DuplicateIdError,
    Ranks,
    matrix_scorer,
    query_targets,
    rank_retrieval,
    recall_metrics,
    top_k,
)


def ranks_of(scores: Tensor, targets: list[int], **kw: Any) -> Ranks:
    return rank_retrieval(matrix_scorer(scores), torch.tensor(targets), scores.shape[1], **kw)


def valor_ranks(scores: Tensor, targets: Tensor, scale: float | None) -> tuple[Tensor, Tensor]:
    """VALOR test.py ``compute_metric_ret`` (+ ``compute_dualsoftmax_*`` when ``scale``), 1-based; no ties allowed."""
    fwd_s = scores if scale is None else scores * torch.softmax(scores * scale, dim=0) * len(scores)
    order = fwd_s.sort(dim=-1, descending=True)[1].tolist()
    fwd = [order[i].index(int(targets[i])) for i in range(len(targets))]
    back_s = scores if scale is None else scores * torch.softmax(scores * scale, dim=1) * len(scores[0])
    order_t = back_s.sort(dim=0, descending=True)[1].permute(1, 0).tolist()
    back = [
        min(order_t[j].index(i) for i in range(len(targets)) if int(targets[i]) == j) for j in range(scores.shape[1])
    ]
    return torch.tensor(fwd) + 1, torch.tensor(back) + 1


def test_hand_computed_ranks_and_metrics() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.5, 0.7], [0.2, 0.6, 0.4]])
    r = ranks_of(scores, [0, 1, 2])
    assert r.forward.tolist() == [1, 3, 2]
    m = recall_metrics(r.forward)
    assert m["R@1"] == pytest.approx(100 / 3) and m["R@5"] == 100.0 and m["R@10"] == 100.0
    assert m["R@avg"] == pytest.approx((100 / 3 + 200) / 3)
    assert m["MedR"] == 2.0 and m["MeanR"] == 2.0


def test_several_captions_per_clip_forward_and_backward() -> None:
    # captions 0 and 1 describe clip 0, caption 2 clip 1, caption 3 clip 2
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.4, 0.35], [0.1, 0.8, 0.9], [0.5, 0.6, 0.7]])
    r = ranks_of(scores, [0, 0, 1, 2])
    assert r.forward.tolist() == [1, 3, 2, 1]
    # clip 0: best caption 0 (0.9), no other clip's caption reaches it; clip 2: caption 2 (0.9) beats caption 3 (0.7)
    assert r.backward.tolist() == [1, 1, 2]
    assert recall_metrics(r.forward)["MedR"] == 1.0  # sorted 1,1,2,3: lower middle


def test_median_is_the_lower_middle_for_an_even_count() -> None:
    assert recall_metrics(torch.tensor([4, 1, 3, 2]))["MedR"] == 2.0  # torch.median, not 2.5
    assert recall_metrics(torch.tensor([5, 1, 3]))["MedR"] == 3.0
    assert recall_metrics(torch.tensor([1, 2, 11, 30]))["R@10"] == 50.0


def test_ties_are_pessimistic_and_order_free() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.7, 0.7], [0.1, 0.1, 0.9]])
    r = ranks_of(scores, [1, 1, 2], backward=False)
    # row 0: all three tie with the target -> rank 3; row 1: the tie with clip 2 counts against it -> 2
    assert r.forward.tolist() == [3, 2, 1]
    # clip 0 has no caption: backward needs one per gallery item
    with pytest.raises(ValueError, match="one caption per gallery item"):
        ranks_of(scores, [1, 1, 2], backward=True)
    flipped = ranks_of(scores.flip(1), [1, 1, 0], backward=False)  # same scores, gallery reversed
    assert flipped.forward.tolist() == [3, 2, 1]


def test_constant_scores_get_the_worst_rank() -> None:
    r = ranks_of(torch.zeros(6, 3), [0, 0, 1, 1, 2, 2])
    assert r.forward.tolist() == [3] * 6
    assert r.backward.tolist() == [5] * 3  # 4 wrong captions tie, +1
    m = recall_metrics(r.forward)
    assert m["R@1"] == 0.0 and m["MedR"] == 3.0


def test_perfect_scores() -> None:
    n = 20
    r = ranks_of(torch.eye(n), list(range(n)), dsl_scale=100.0)
    for ranks in (r.forward, r.backward, r.forward_dsl, r.backward_dsl):
        assert ranks is not None and ranks.tolist() == [1] * n
    m = recall_metrics(r.forward)
    assert (m["R@1"], m["MedR"], m["MeanR"]) == (100.0, 1.0, 1.0)


def test_random_scores_give_chance_level() -> None:
    n = 1000
    g = torch.Generator().manual_seed(0)
    r = ranks_of(torch.rand(n, n, generator=g), list(range(n)))
    m = recall_metrics(r.forward)
    assert m["MeanR"] == pytest.approx((n + 1) / 2, abs=40)  # sd of the mean of n uniform ranks: ~9
    assert 0.0 <= m["R@10"] <= 3.0  # expected 1 %
    assert m["MedR"] == pytest.approx(n / 2, abs=80)


def test_matches_valor_compute_metric_ret_with_and_without_dsl() -> None:
    g = torch.Generator().manual_seed(1)
    targets = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])  # several captions per clip, as MSR-VTT and VATEX
    scores = torch.rand(10, 6, generator=g) + 0.3 * torch.nn.functional.one_hot(targets, 6)
    for scale in (None, 20.0):
        r = rank_retrieval(matrix_scorer(scores), targets, 6, dsl_scale=scale)
        want_fwd, want_back = valor_ranks(scores, targets, scale)
        got_fwd = r.forward if scale is None else r.forward_dsl
        got_back = r.backward if scale is None else r.backward_dsl
        assert got_fwd is not None and got_back is not None
        assert got_fwd.tolist() == want_fwd.tolist()
        assert got_back.tolist() == want_back.tolist()


def test_dual_softmax_demotes_a_hub() -> None:
    # clip 0 scores high for every caption (a hub); DSL normalises each clip over the captions
    scores = torch.tensor([[0.9, 0.8], [0.95, 0.1]])
    r = ranks_of(scores, [1, 0], dsl_scale=10.0)
    assert r.forward.tolist() == [2, 1]
    assert r.forward_dsl.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("query_batch", "gallery_batch", "cache_bytes"), [(3, 2, 0), (1, 7, 0), (4, 3, 200), (64, 64, 0)]
)
def test_slicing_equals_unsliced(query_batch: int, gallery_batch: int, cache_bytes: int) -> None:
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, 7, (23,), generator=g)
    targets[:7] = torch.arange(7)  # every clip has a caption
    scores = torch.randint(0, 5, (23, 7), generator=g).float()  # many ties
    whole = rank_retrieval(matrix_scorer(scores), targets, 7, dsl_scale=3.0, query_batch=10**6, gallery_batch=10**6)
    sliced = rank_retrieval(
        matrix_scorer(scores),
        targets,
        7,
        dsl_scale=3.0,
        query_batch=query_batch,
        gallery_batch=gallery_batch,
        cache_bytes=cache_bytes,
    )
    for name in ("forward", "backward", "forward_dsl", "backward_dsl"):
        assert torch.equal(getattr(whole, name), getattr(sliced, name)), name


def test_scorer_calls_are_tiles_of_the_requested_size() -> None:
    scores = torch.rand(10, 9)
    seen: list[tuple[int, int]] = []

    def score(q: slice, g: slice) -> Tensor:
        seen.append((q.stop - q.start, g.stop - g.start))
        return scores[q, g]

    rank_retrieval(score, torch.arange(10) % 9, 9, backward=False, query_batch=4, gallery_batch=5)
    assert max(seen) <= (4, 5) and len(seen) == 3 * 2  # one pass: 3 query blocks x 2 gallery tiles
    seen.clear()
    rank_retrieval(score, torch.arange(10) % 9, 9, query_batch=4, gallery_batch=5, cache_bytes=0)
    assert len(seen) == 2 * 3 * 2  # the second pass recomputes when nothing is cached


def test_ids_duplicates_and_unknown_targets() -> None:
    assert query_targets(["b", "a", "b"], ["a", "b"]).tolist() == [1, 0, 1]
    with pytest.raises(DuplicateIdError, match=r"1 duplicate clip id\(s\): a \(2x\)"):
        query_targets(["a"], ["a", "b", "a"])
    with pytest.raises(ValueError, match="not in the gallery: c"):
        query_targets(["c"], ["a", "b"])


def test_bad_scores_and_shapes() -> None:
    scores = torch.tensor([[0.1, float("nan")], [0.3, 0.4]])
    with pytest.raises(ValueError, match="non-finite scores"):
        ranks_of(scores, [0, 1])
    with pytest.raises(ValueError, match="gallery positions"):
        ranks_of(torch.rand(2, 2), [0, 2])
    with pytest.raises(ValueError, match=r"returned \[2, 1\]"):
        rank_retrieval(lambda q, g: torch.zeros(2, 1), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="at least one query"):
        recall_metrics(torch.empty(0, dtype=torch.long))


def test_top_k_breaks_ties_by_gallery_order() -> None:
    scores = torch.tensor([[0.2, 0.9, 0.9, 0.1], [0.5, 0.5, 0.5, 0.5]])
    assert top_k(matrix_scorer(scores), [0, 1], 4, k=3, gallery_batch=3).tolist() == [[1, 2, 0], [0, 1, 2]]

"""Retrieval metrics as the papers define them (VALOR ``compute_metric_ret``, papers.md §1.10), computed in slices.

Every caption is a query whose ground truth is its clip; a clip with several captions appears once in the gallery.

* **Forward** (text→clip, ``t2v``): the rank of the query's clip among all gallery clips.
* **Backward** (clip→text, ``v2t``): each clip is a query over all captions; its rank is that of its best-ranked
  caption (VALOR: the min over the clip's captions).
* R@K = % of queries with rank ≤ K; MedR = ``torch.median`` of the 1-based ranks (the lower middle value for an even
  count, as VALOR's ``torch.median(rank) + 1``); MeanR = their mean.
* **Ties are pessimistic**: a rank counts every wrong item scoring *at least* as high as the right one, so
  rank = 1 + #{wrong items with score ≥ the right one's}. The result does not depend on the order of the gallery or
  on the slicing, and a model that scores everything alike gets the worst rank, never a lucky one. (VALOR sorts and
  takes the position, which leaves ties to the sort; collaborative-experts averages over the tied positions.)
  In the backward direction the clip's other captions are not competitors, only other clips' captions are.
* **Dual softmax** (DSL, VALOR ``compute_dualsoftmax_*``): forward scores become ``s · softmax_over_queries(s · τ)``,
  backward ``s · softmax_over_gallery(s · τ)`` with τ the model's logit scale (VALOR's 1/temp); the constant factor
  VALOR multiplies by does not change ranks and is left out. Reported separately.

The score matrix [N_queries, N_gallery] is never held whole unless it fits ``cache_bytes``: a ``Scorer`` returns
one tile [q, g] at a time and ranks are counted per block of query rows. Forward ranks need one pass; backward ranks
and DSL need a second, which reuses the cached row blocks (recomputed when the cache is full; scoring is deterministic,
so the values are the same). Nothing here imports the model: a scorer is any function of two slices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from avlops.evaluation.names import RECALL_KS

__all__ = [
    "DuplicateIdError",
    "Ranks",
    "Scorer",
    "matrix_scorer",
    "query_targets",
    "rank_retrieval",
    "recall_metrics",
    "top_k",
]

#: (query rows, gallery rows) -> scores [q, g], higher = more similar
Scorer = Callable[[slice, slice], Tensor]


class DuplicateIdError(ValueError):
    """The gallery names one clip id more than once, so a query's ground truth is ambiguous."""


@dataclass(frozen=True)
class Ranks:
    """1-based, pessimistic ranks of one retrieval task (int64)."""

    forward: Tensor  # [Nq] rank of each query's gallery item
    backward: Tensor | None = None  # [Ng] rank of each gallery item's best caption among all queries
    forward_dsl: Tensor | None = None  # [Nq] after dual softmax
    backward_dsl: Tensor | None = None  # [Ng]


def recall_metrics(ranks: Tensor, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """R@K (% of ranks ≤ K), R@avg (mean of those R@K), MedR (``torch.median``: lower middle) and MeanR, from 1-based
    ranks [N]."""
    if ranks.numel() == 0:
        raise ValueError("no ranks: retrieval needs at least one query")
    out = {f"R@{k}": 100.0 * float((ranks <= k).double().mean()) for k in ks}
    out["R@avg"] = sum(out[f"R@{k}"] for k in ks) / len(ks)
    out["MedR"] = float(torch.median(ranks))
    out["MeanR"] = float(ranks.double().mean())
    return out


def query_targets(query_ids: Sequence[str], gallery_ids: Sequence[str]) -> Tensor:
    """The gallery position of each query's clip id [Nq] (int64); refuses duplicate gallery ids and unknown ids."""
    position: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    for i, clip in enumerate(gallery_ids):
        if clip in position:
            duplicates[clip] = duplicates.get(clip, 1) + 1
        position.setdefault(clip, i)
    if duplicates:
        shown = ", ".join(f"{c} ({n}x)" for c, n in sorted(duplicates.items())[:10])
        more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        raise DuplicateIdError(f"the gallery holds {len(duplicates)} duplicate clip id(s): {shown}{more}")
    missing = sorted({q for q in query_ids if q not in position})
    if missing:
        raise ValueError(f"{len(missing)} query clip id(s) are not in the gallery: {', '.join(missing[:10])}")
    return torch.tensor([position[q] for q in query_ids], dtype=torch.long)


def matrix_scorer(scores: Tensor) -> Scorer:
    """A scorer over a score matrix [Nq, Ng] already in memory."""

    def score(q: slice, g: slice) -> Tensor:
        return scores[q, g]

    return score


class _Rows:
    """Row blocks [q, Ng] of the score matrix, assembled from gallery tiles, cached up to a byte budget."""

    def __init__(self, score: Scorer, n_query: int, n_gallery: int, query_batch: int, gallery_batch: int, cache: int):
        self.score, self.n_gallery, self.gallery_batch = score, n_gallery, gallery_batch
        self.blocks = [slice(s, min(s + query_batch, n_query)) for s in range(0, n_query, query_batch)]
        self.budget = cache
        self.cached: dict[int, Tensor] = {}

    def __call__(self, k: int) -> Tensor:
        if k in self.cached:
            return self.cached[k]
        q = self.blocks[k]
        tiles = [
            self.score(q, slice(g, min(g + self.gallery_batch, self.n_gallery)))
            for g in range(0, self.n_gallery, self.gallery_batch)
        ]
        rows = torch.cat(tiles, dim=1).float()  # [q, Ng]
        if rows.shape != (q.stop - q.start, self.n_gallery):
            want = [q.stop - q.start, self.n_gallery]
            raise ValueError(f"the scorer returned {list(rows.shape)} for a {want} block of the score matrix")
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(f"non-finite scores in query rows {q.start}..{q.stop - 1}")
        if rows.numel() * rows.element_size() <= self.budget:
            self.budget -= rows.numel() * rows.element_size()
            self.cached[k] = rows
        return rows


def _forward_ranks(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Pessimistic 1-based ranks [q] of each row's target in scores [q, Ng], and the target scores [q]."""
    gt = scores.gather(1, targets[:, None])  # [q, 1]
    return (scores >= gt).sum(dim=1), gt[:, 0]


def _backward_hits(scores: Tensor, targets: Tensor, threshold: Tensor) -> Tensor:
    """Per gallery item [Ng]: wrong captions in this block scoring ≥ its threshold (its best caption's score)."""
    hits = scores >= threshold[None]  # [q, Ng]
    hits[torch.arange(scores.shape[0]), targets] = False  # a clip's own captions do not compete with it
    return hits.sum(dim=0)


def _best_per_item(values: Tensor, targets: Tensor, n_gallery: int) -> Tensor:
    """Max of ``values`` [Nq] over each gallery item's queries [Ng]."""
    return torch.full((n_gallery,), float("-inf")).scatter_reduce(0, targets, values, reduce="amax")


def rank_retrieval(
    score: Scorer,
    targets: Tensor,
    n_gallery: int,
    *,
    backward: bool = True,
    dsl_scale: float | None = None,
    query_batch: int = 256,
    gallery_batch: int = 1024,
    cache_bytes: int = 1 << 30,
    progress: bool = False,
    desc: str = "rank",
) -> Ranks:
    """Ranks of every query (and, with ``backward``, of every gallery item), optionally after dual softmax.

    ``targets`` [Nq] holds each query's gallery position (:func:`query_targets`). ``dsl_scale`` turns DSL on with that
    logit scale. The score matrix is requested in tiles of ``query_batch`` × ``gallery_batch``; row blocks are kept
    for the second pass while they fit ``cache_bytes``.
    """
    targets = targets.long().cpu()
    n_query = targets.numel()
    if n_query == 0 or n_gallery == 0:
        raise ValueError("retrieval needs at least one query and one gallery item")
    if int(targets.min()) < 0 or int(targets.max()) >= n_gallery:
        raise ValueError(f"query targets must be gallery positions in [0, {n_gallery})")
    if backward and int(torch.bincount(targets, minlength=n_gallery).min()) == 0:
        raise ValueError("backward ranks need at least one caption per gallery item")
    rows = _Rows(score, n_query, n_gallery, query_batch, gallery_batch, cache_bytes)
    second = backward or dsl_scale is not None
    n_blocks = len(rows.blocks) * (2 if second else 1)
    bar = tqdm(total=n_blocks, desc=desc, unit="block", disable=None if progress else True)

    fwd = torch.empty(n_query, dtype=torch.long)
    gt = torch.empty(n_query)
    row_lse = torch.empty(n_query)  # DSL backward: per query, logsumexp over the gallery
    gt_back_dsl = torch.empty(n_query)
    col_lse = torch.full((n_gallery,), float("-inf"))  # DSL forward: per gallery item, logsumexp over the queries
    for k, q in enumerate(rows.blocks):
        s, t = rows(k), targets[q]
        fwd[q], gt[q] = _forward_ranks(s, t)
        if dsl_scale is not None:
            logits = s * dsl_scale  # [q, Ng]
            row_lse[q] = torch.logsumexp(logits, dim=1)
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(logits, dim=0))
            gt_back_dsl[q] = _row_dsl(s, dsl_scale, row_lse[q]).gather(1, t[:, None])[:, 0]
        bar.update(1)
    if not second:
        bar.close()
        return Ranks(forward=fwd)

    back = torch.ones(n_gallery, dtype=torch.long)
    back_dsl = torch.ones(n_gallery, dtype=torch.long)
    fwd_dsl = torch.empty(n_query, dtype=torch.long)
    threshold = _best_per_item(gt, targets, n_gallery)
    threshold_dsl = _best_per_item(gt_back_dsl, targets, n_gallery) if dsl_scale is not None else None
    for k, q in enumerate(rows.blocks):
        s, t = rows(k), targets[q]
        if backward:
            back += _backward_hits(s, t, threshold)
        if dsl_scale is not None and threshold_dsl is not None:
            col = s * torch.exp(s * dsl_scale - col_lse[None])  # [q, Ng]: softmax over all queries, per item
            fwd_dsl[q], _ = _forward_ranks(col, t)
            if backward:
                back_dsl += _backward_hits(_row_dsl(s, dsl_scale, row_lse[q]), t, threshold_dsl)
        bar.update(1)
    bar.close()
    return Ranks(
        forward=fwd,
        backward=back if backward else None,
        forward_dsl=fwd_dsl if dsl_scale is not None else None,
        backward_dsl=back_dsl if backward and dsl_scale is not None else None,
    )


def _row_dsl(scores: Tensor, scale: float, lse: Tensor) -> Tensor:
    """scores [q, Ng] · softmax over the gallery (row-wise) of scores · scale, with the rows' logsumexp [q] given."""
    return scores * torch.exp(scores * scale - lse[:, None])


def top_k(score: Scorer, queries: Sequence[int], n_gallery: int, k: int, gallery_batch: int = 1024) -> Tensor:
    """Gallery positions [len(queries), k'] of the best-scoring items of some queries (ties: gallery order)."""
    rows = []
    for i in queries:
        tiles = [
            score(slice(i, i + 1), slice(g, min(g + gallery_batch, n_gallery)))
            for g in range(0, n_gallery, gallery_batch)
        ]
        rows.append(torch.cat(tiles, dim=1).float()[0])  # [Ng]
    if not rows:
        return torch.empty(0, min(k, n_gallery), dtype=torch.long)
    order = torch.stack(rows).sort(dim=1, descending=True, stable=True).indices  # [n, Ng]
    return order[:, :k]

"""Metric names, defined once: ``metrics.json``, the report, the blessing gate and its config all use these.

A name is ``family/task/metric``:

* ``retrieval/t2v/R@1`` — retrieval, text→video, recall at 1 (in %); ``retrieval-dsl/...`` is the same after
  dual-softmax re-ranking, reported separately as the papers do ("+DSL" rows);
* tasks are ``t2{m}`` (every caption is a query) and ``{m}2t`` (every clip is a query) for the modality groups ``m`` =
  ``v`` (video frames), ``a`` (audio), ``av`` (audio + video);
* ``captioning/av/CIDEr`` — captions generated from group ``av``, scored ×100; ``captioning/av/empty`` and the other
  :data:`CAPTION_QUALITY` names describe the generated captions themselves (``avlops.evaluation.caption_quality``).

Light on purpose (no torch): the gate and the registration code import it.
"""

from __future__ import annotations

from avlops.modality import Modality

__all__ = [
    "CAPTIONING",
    "CAPTION_METRICS",
    "CAPTION_QUALITY",
    "LOWER_IS_BETTER",
    "RECALL_KS",
    "RETRIEVAL",
    "RETRIEVAL_DSL",
    "RETRIEVAL_METRICS",
    "all_metric_names",
    "backward",
    "caption_key",
    "caption_task_key",
    "forward",
    "higher_is_better",
    "is_metric",
    "retrieval_key",
    "retrieval_task_key",
]


RETRIEVAL = "retrieval"
RETRIEVAL_DSL = "retrieval-dsl"
CAPTIONING = "captioning"

RECALL_KS = (1, 5, 10)
#: R@K in % of queries; R@avg = mean of R@1, R@5, R@10 (VALOR's ``ravg``); MedR and MeanR are 1-based ranks
RETRIEVAL_METRICS = ("R@1", "R@5", "R@10", "R@avg", "MedR", "MeanR")
#: pycocoevalcap's Bleu_4, METEOR, ROUGE_L and CIDEr, ×100
CAPTION_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
#: % of generated captions that are empty (no word), repetitive (a token twice in a row or a 3-gram twice) or
#: degenerate (empty, repetitive or under 3 words); distinct-n: unique n-grams / all n-grams of the group, in %
CAPTION_QUALITY = ("empty", "repetitive", "degenerate", "distinct-1", "distinct-2")
LOWER_IS_BETTER = frozenset({"MedR", "MeanR", "empty", "repetitive", "degenerate"})


def forward(modality: Modality) -> str:
    """Text→group task name: every caption is a query (``t2v``)."""
    return f"t2{modality.value}"


def backward(modality: Modality) -> str:
    """Group→text task name: every clip is a query, its best-ranked caption counts (``v2t``)."""
    return f"{modality.value}2t"


def retrieval_task_key(task: str, dsl: bool = False) -> str:
    """A retrieval task's key (``retrieval/t2v``; ``retrieval-dsl/t2v`` after dual softmax)."""
    return f"{RETRIEVAL_DSL if dsl else RETRIEVAL}/{task}"


def caption_task_key(modality: Modality) -> str:
    """A captioning task's key (``captioning/av``)."""
    return f"{CAPTIONING}/{modality.value}"


def retrieval_key(task: str, metric: str, dsl: bool = False) -> str:
    return f"{retrieval_task_key(task, dsl)}/{metric}"


def caption_key(modality: Modality, metric: str) -> str:
    return f"{caption_task_key(modality)}/{metric}"


def all_metric_names() -> tuple[str, ...]:
    """Every metric an evaluation can report, in report order."""
    names = [
        retrieval_key(task, metric, dsl)
        for dsl in (False, True)
        for m in Modality
        for task in (forward(m), backward(m))
        for metric in RETRIEVAL_METRICS
    ]
    names += [caption_key(m, metric) for m in Modality for metric in (*CAPTION_METRICS, *CAPTION_QUALITY)]
    return tuple(names)


_ALL = frozenset(all_metric_names())


def is_metric(name: str) -> bool:
    return name in _ALL


def higher_is_better(name: str) -> bool:
    """R@K, caption scores and distinct-n: higher is better; MedR, MeanR and the shares of bad captions: lower."""
    return name.rsplit("/", 1)[-1] not in LOWER_IS_BETTER

"""The evaluation's result file, ``metrics.json``: every metric by its one name, plus what was measured on what.

Layout::

    {
      "format": "avlops.evaluate", "format_version": 1,
      "checkpoint": ".../checkpoints/step-00000020", "step": 20,
      "data": "data/preprocessed", "split": "test", "manifest": "data/synth/manifest.jsonl",
      "metrics": {"retrieval/t2av/R@1": 42.5, ..., "captioning/av/CIDEr": 61.2},   # names: avlops.evaluation.names
      "tasks": {"retrieval/t2av": {"queries": 60, "gallery": 20}, "captioning/av": {"clips": 20}, ...},
      "skipped": {"retrieval/t2a": "no clip of split 'test' has audio", ...},
      "notes": ["..."], "settings": {... the evaluate config ...}, "seconds": 12.3
    }

Also the in-memory result of a run (:class:`Evaluation`, :class:`RetrievalOutcome`) that ``run`` produces and
``report`` renders, so neither imports the other. Light on purpose (json only; torch types only for annotations):
the gate and the registration code read it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avlops.evaluation.names import is_metric
from avlops.fileio import read_json_object, write_json_atomic
from avlops.modality import Modality

if TYPE_CHECKING:  # torch: only for the annotations of what a run measured
    from avlops.evaluation.dataset import EvalSet
    from avlops.evaluation.retrieval import Ranks

__all__ = [
    "FORMAT",
    "METRICS_NAME",
    "TOP_K",
    "Evaluation",
    "EvaluationResult",
    "MetricsFileError",
    "RetrievalExample",
    "RetrievalOutcome",
    "read_metrics",
    "write_metrics",
]

FORMAT = "avlops.evaluate"
FORMAT_VERSION = 1
METRICS_NAME = "metrics.json"
TOP_K = 5  # results shown per example query


class MetricsFileError(ValueError):
    """A metrics file that is not an avlops evaluation result."""


@dataclass(frozen=True)
class EvaluationResult:
    checkpoint: str
    step: int | None
    data: str
    split: str
    manifest: str
    metrics: dict[str, float]  # metric name -> value
    tasks: dict[str, dict[str, int]] = field(default_factory=dict)  # "retrieval/t2v" -> {"queries", "gallery"}
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it did not run
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], where: str = "metrics") -> EvaluationResult:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise MetricsFileError(
                f"{where}: not an avlops evaluation result (format {data.get('format')!r} "
                f"version {data.get('format_version')!r}, expected {FORMAT!r} version {FORMAT_VERSION})"
            )
        metrics = data.get("metrics")
        if not isinstance(metrics, dict) or not all(isinstance(v, int | float) for v in metrics.values()):
            raise MetricsFileError(f"{where}: 'metrics' must map metric names to numbers")
        unknown = sorted(k for k in metrics if not is_metric(k))
        if unknown:
            raise MetricsFileError(f"{where}: unknown metric name(s) {', '.join(unknown[:5])}")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**fields, "metrics": {k: float(v) for k, v in metrics.items()}})


@dataclass(frozen=True)
class RetrievalExample:
    caption: int  # caption index (the query)
    clip: int  # its clip index
    rank: int
    top: list[int]  # clip indices of the best-scoring gallery items


@dataclass(frozen=True)
class RetrievalOutcome:
    modality: Modality
    ranks: Ranks
    gallery: int
    queries: int
    examples: list[RetrievalExample]


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured: the result written to ``metrics.json`` and the material of the report."""

    result: EvaluationResult
    data: EvalSet
    retrieval: dict[Modality, RetrievalOutcome] = field(default_factory=dict)
    captions: dict[Modality, dict[str, str]] = field(default_factory=dict)  # group -> clip id -> generated caption


def write_metrics(out_dir: Path, result: EvaluationResult) -> Path:
    """Write ``out_dir/metrics.json`` (atomically) and return its path."""
    if any(not math.isfinite(v) for v in result.metrics.values()):
        raise ValueError("metrics must be finite numbers")
    path = out_dir / METRICS_NAME
    write_json_atomic(path, result.to_json_dict())
    return path


def read_metrics(path: str | Path) -> EvaluationResult:
    """Read a ``metrics.json`` (or the folder holding one); FileNotFoundError or MetricsFileError name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_NAME
    data = read_json_object(p, what="metrics file", error=MetricsFileError)
    return EvaluationResult.from_json_dict(data, str(p))

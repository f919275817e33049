"""Training metrics: a JSON-lines log in the run folder and Prometheus gauges, pushed to a Pushgateway if configured.

The only module of the training package that imports ``prometheus_client``. Metrics live in a private
``CollectorRegistry`` (never the process-global one), so two runs in one process, or a test, do not collide. Metric
names are defined once here; dashboards and alert rules should use these constants' values.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway

from avlops.training.params import MetricsConfig

__all__ = [
    "LOG_NAME",
    "METRIC_DATA_WAIT",
    "METRIC_LOSS",
    "METRIC_LR",
    "METRIC_SAMPLES",
    "METRIC_SAMPLES_PER_S",
    "METRIC_STEP",
    "TrainMetrics",
    "truncate_log",
]

log = logging.getLogger(__name__)

LOG_NAME = "metrics.jsonl"
METRIC_LOSS = "avlops_train_loss"  # label term: total, mga, mga/tv, ..., mgc, audio_self
METRIC_LR = "avlops_train_learning_rate"  # label group: new, new/no_decay, pretrained, pretrained/no_decay
METRIC_SAMPLES_PER_S = "avlops_train_samples_per_second"
METRIC_DATA_WAIT = "avlops_train_data_wait_ratio"
METRIC_STEP = "avlops_train_step"
METRIC_SAMPLES = "avlops_train_samples"  # counter: exposed as avlops_train_samples_total
METRIC_CHECKPOINT_STEP = "avlops_train_last_checkpoint_step"


class TrainMetrics:
    """Gauges and the JSON-lines log of one run; only the main rank writes (``enabled``)."""

    def __init__(self, out_dir: Path, cfg: MetricsConfig, run: str, enabled: bool = True) -> None:
        self.path = out_dir / LOG_NAME
        self.cfg, self.run, self.enabled = cfg, run, enabled
        self.registry = CollectorRegistry()
        r = self.registry
        self.loss = Gauge(
            METRIC_LOSS, "Training loss term, mean over the steps since the last log", ["term"], registry=r
        )
        self.lr = Gauge(METRIC_LR, "Learning rate of a parameter group", ["group"], registry=r)
        self.samples_per_s = Gauge(METRIC_SAMPLES_PER_S, "Global training samples per second", registry=r)
        self.data_wait = Gauge(METRIC_DATA_WAIT, "Share of the wall time spent waiting for the next batch", registry=r)
        self.step = Gauge(METRIC_STEP, "Optimizer steps done", registry=r)
        self.samples = Counter(METRIC_SAMPLES, "Training samples processed by this process's run", registry=r)
        self.checkpoint_step = Gauge(METRIC_CHECKPOINT_STEP, "Step of the last checkpoint written", registry=r)
        self._push_failed = False

    def record(self, entry: Mapping[str, Any], samples: int) -> None:
        """Set the gauges from one log entry and append it to ``metrics.jsonl``.

        ``entry``: step, epoch, loss {term: value}, lr {group: value}, samples_per_s, data_wait_share, and anything
        else worth keeping (written as is).
        """
        for term, value in entry.get("loss", {}).items():
            self.loss.labels(term=term).set(value)
        for group, value in entry.get("lr", {}).items():
            self.lr.labels(group=group).set(value)
        self.samples_per_s.set(entry.get("samples_per_s", 0.0))
        self.data_wait.set(entry.get("data_wait_share", 0.0))
        self.step.set(entry["step"])
        self.samples.inc(samples)
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(_finite(dict(entry)), sort_keys=True, allow_nan=False) + "\n")

    def checkpointed(self, step: int) -> None:
        self.checkpoint_step.set(step)

    def push(self) -> None:
        """Push the registry to the Pushgateway (if configured); a failure is logged once and training goes on."""
        if not (self.enabled and self.cfg.pushgateway):
            return
        try:
            push_to_gateway(
                self.cfg.pushgateway, job=self.cfg.job, registry=self.registry, grouping_key={"run": self.run}
            )
        except Exception as err:  # network errors of every kind: metrics must never stop a training run
            if not self._push_failed:
                log.warning("could not push metrics to %s: %s (will keep trying)", self.cfg.pushgateway, err)
            self._push_failed = True
        else:
            self._push_failed = False


def _finite(value: Any) -> Any:
    """NaN / inf -> None, so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def truncate_log(out_dir: Path, step: int) -> None:
    """Drop the log lines after ``step`` (written by a run that stopped before its next checkpoint), so a resumed
    run's log reads as one uninterrupted run."""
    path = out_dir / LOG_NAME
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        tmp.replace(path)

"""Canary-vs-stable statistical comparison for analysis (a ``compare`` provider), Kayenta-style.

The metric's query, with ``{{args.track}}`` set to the canary's and then the stable's value, is sampled every ``step``
over the last ``window`` (a Prometheus range query, e.g. the 30 s error ratio or p99 latency of each track). The two
samples are compared with a one-sided Mann–Whitney U test; the measurement's value is the p-value of "the canary is
not worse" (``direction: increase``: worse = larger, e.g. latency or errors; ``decrease``: worse = smaller, e.g.
recall). A small p-value is evidence the canary is worse: conditions such as ``successCondition: result[0] >= 0.05``
and ``failureCondition: result[0] < 0.01`` read naturally. Fewer than three samples on a side gives NaN (inconclusive).
"""

from __future__ import annotations

import math
import time

from scipy.stats import mannwhitneyu

from avlops.monitoring.prometheus import PrometheusClient
from avlops.rollout.spec import CompareProvider, parse_duration, render_query

__all__ = ["MIN_SAMPLES", "compare_samples", "compare_tracks"]

MIN_SAMPLES = 3


def compare_samples(canary: list[float], stable: list[float], direction: str = "increase") -> float:
    """The one-sided Mann–Whitney p-value that ``canary`` is worse than ``stable`` (NaN when too few samples)."""
    canary = [v for v in canary if not math.isnan(v)]
    stable = [v for v in stable if not math.isnan(v)]
    if len(canary) < MIN_SAMPLES or len(stable) < MIN_SAMPLES:
        return math.nan
    if len(set(canary) | set(stable)) == 1:
        return 1.0  # identical constant samples: no evidence either way
    alternative = "greater" if direction == "increase" else "less"
    return float(mannwhitneyu(canary, stable, alternative=alternative).pvalue)


def compare_tracks(
    client: PrometheusClient, spec: CompareProvider, args: dict[str, str], now: float | None = None
) -> float:
    """Sample both tracks from Prometheus and compare them (see the module docstring)."""
    end = time.time() if now is None else now
    start = end - parse_duration(spec.window)
    step = parse_duration(spec.step)
    samples = []
    for track in (spec.canary, spec.stable):
        series = client.query_range(render_query(spec.query, {**args, "track": track}), start, end, step)
        samples.append([v for _, values in series for v in values])
    return compare_samples(samples[0], samples[1], spec.direction)

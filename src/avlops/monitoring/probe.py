"""The golden-query probe: analysis that knows the served thing is a retrieval model.

Held-out captions (the ``test`` split of a manifest, each with the clip it describes) are sent straight to each
track's Triton server (not through Envoy, so the probe does not count as user traffic). For each track the probe
computes **recall@k** — the share of captions whose own clip is among the top ``k`` search hits — and, between the
two tracks, the **embedding agreement**: the mean cosine similarity of the canary's and the stable's text embedding
of each caption. A canary whose weights were corrupted stays healthy and fast and is caught here. Results go to the
Pushgateway (job ``avlops_probe``) as ``avlops_probe_recall_at_k{track, version, k}`` and
``avlops_probe_embedding_agreement``, where the rollout's analysis reads them through Prometheus.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avlops.serving.client import ServingClient

__all__ = ["GoldenProbe", "ProbeResult", "golden_queries"]

log = logging.getLogger(__name__)

JOB = "avlops_probe"


def golden_queries(manifest: Path, split: str = "test") -> list[tuple[str, str]]:
    """``(caption, clip_id)`` for every caption of the manifest's ``split`` records."""
    out: list[tuple[str, str]] = []
    for line in Path(manifest).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("split") == split:
            out.extend((str(c), str(record["clip_id"])) for c in record.get("captions", []))
    if not out:
        raise ValueError(f"{manifest}: no {split} captions for the golden-query probe")
    return out


@dataclass(frozen=True)
class ProbeResult:
    recall: dict[str, float]  # track -> recall@k
    agreement: float  # mean cosine similarity of the two tracks' text embeddings (NaN with one track)
    k: int
    versions: dict[str, int] = field(default_factory=dict)


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit


@dataclass
class GoldenProbe:
    queries: list[tuple[str, str]]
    k: int = 5
    interval_s: float = 5.0
    _last: float = 0.0

    @classmethod
    def from_manifest(cls, manifest: Path, k: int = 5) -> GoldenProbe:
        return cls(golden_queries(manifest), k=k)

    def measure(self, addresses: dict[str, str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Recall@k and the text embeddings per track, from each track's gRPC ``addresses[track]``."""
        captions = [c for c, _ in self.queries]
        recall, embeddings = {}, {}
        for track, address in addresses.items():
            with ServingClient(address) as client:
                hits = client.search_many(captions, self.k)
                embeddings[track] = _unit(client.embed_text(captions).embedding.astype(np.float64))
            found = [clip in {h.clip_id for h in row} for row, (_, clip) in zip(hits, self.queries, strict=True)]
            recall[track] = float(np.mean(found))
        return recall, embeddings

    def run(self, addresses: dict[str, str], versions: dict[str, int]) -> ProbeResult:
        recall, emb = self.measure(addresses)
        agreement = float(np.mean(np.sum(emb["canary"] * emb["stable"], axis=-1))) if len(emb) == 2 else float("nan")
        return ProbeResult(recall, agreement, self.k, versions)

    def push(self, result: ProbeResult, pushgateway: str) -> None:
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        registry = CollectorRegistry()
        recall = Gauge(
            "avlops_probe_recall_at_k", "golden-query search recall@k", ["track", "version", "k"], registry=registry
        )
        for track, value in result.recall.items():
            recall.labels(track, str(result.versions.get(track, "")), str(result.k)).set(value)
        Gauge(
            "avlops_probe_embedding_agreement",
            "mean cosine similarity of canary and stable text embeddings of the golden captions",
            ["canary_version", "stable_version"],
            registry=registry,
        ).labels(str(result.versions.get("canary", "")), str(result.versions.get("stable", ""))).set(result.agreement)
        Gauge("avlops_probe_last_run_timestamp_seconds", "when the probe last ran", registry=registry).set(time.time())
        push_to_gateway(pushgateway.removeprefix("http://"), job=JOB, registry=registry)

    def hook(self) -> Callable[[Any, Any], None]:
        """A controller hook: probe both tracks every ``interval_s`` while a canary serves."""

        def tick(controller: Any, state: Any) -> None:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                return
            self._last = now
            platform = controller.platform
            addresses = {"canary": platform.grpc(state.canary_slot), "stable": platform.grpc(state.stable_slot)}
            versions = {"canary": state.version, "stable": state.stable_version}
            try:
                self.push(self.run(addresses, versions), platform.pushgateway_url)
            except Exception as err:  # a probe failure must not stop the controller: the analysis sees no new data
                log.warning("golden-query probe failed: %s", err)

        return tick

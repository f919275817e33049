"""Clip embeddings in the Feast store: the ``clip_embedding`` view, next to ``clip_metadata`` and ``clip_stats``.

A registered version's catalogue is published here (``avlops catalogue publish``): per clip its T-AV embedding
(``Array(Float32)``, the masked mean of its frame and audio-slice features), the registry version and the checkpoint
it came from, stamped with the publication time, so a point-in-time lookup returns the embedding that was being served
then and an online lookup joins the newest one with the clip's metadata. Feast's online vector search does not work on
the local sqlite store, so nearest-neighbour search stays in the server (``catalogue_search``).
"""

from __future__ import annotations

# first: Feast imported without typeguard instrumenting its classes (avlops.features.unchecked)
import avlops.features.unchecked  # noqa: F401  # isort: skip
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureView, Field, FileSource
from feast.types import Array, Float32, Int64, String

from avlops.features.params import FeaturesConfig
from avlops.features.store import (
    METADATA_VIEW,
    _local_or_url,
    _quiet_dask,
    feature_definitions,
    get_online_clip_features,
    open_store,
    write_repo,
)
from avlops.features.tables import EVENT_TIMESTAMP, JOIN_KEY, to_utc, write_part

__all__ = ["EMBEDDING_VIEW", "EmbeddingReport", "embedding_view", "publish_embeddings"]

EMBEDDING_VIEW = "clip_embedding"


def embedding_view(source_root: str, ttl: timedelta = timedelta(0)) -> FeatureView:
    """The ``clip_embedding`` view over ``<source_root>/clip_embedding/`` (parquet parts), on the ``clip`` entity."""
    entity = feature_definitions(source_root, ttl).entity
    return FeatureView(
        name=EMBEDDING_VIEW,
        entities=[entity],
        ttl=ttl,
        schema=[
            Field(name="embedding", dtype=Array(Float32)),
            Field(name="model_version", dtype=Int64),
            Field(name="checkpoint_sha256", dtype=String),
        ],
        source=FileSource(
            name=f"{EMBEDDING_VIEW}_source",
            path=f"{source_root.rstrip('/')}/{EMBEDDING_VIEW}",
            timestamp_field=EVENT_TIMESTAMP,
        ),
        online=True,
        description="T-AV clip embeddings of a registered model version (avlops catalogue publish)",
        tags={"owner": "avlops"},
    )


@dataclass(frozen=True)
class EmbeddingReport:
    rows: int
    model_version: int
    event_timestamp: datetime
    example: dict[str, dict[str, Any]]  # an online lookup of the first clip: embedding size, version, metadata


def publish_embeddings(
    cfg: FeaturesConfig,
    clip_ids: Sequence[str],
    embeddings: np.ndarray,
    model_version: int,
    checkpoint_sha256: str,
    at: datetime | None = None,
) -> EmbeddingReport:
    """Write ``embeddings`` [N, C] of ``clip_ids`` to the offline source, apply the view and load the online store."""
    if len(clip_ids) != len(embeddings):
        raise ValueError(f"{len(clip_ids)} clip ids but {len(embeddings)} embeddings")
    stamp = to_utc(at)
    table = pd.DataFrame(
        {
            JOIN_KEY: pd.Series(list(clip_ids), dtype="string"),
            "embedding": [np.asarray(e, dtype=np.float32).tolist() for e in embeddings],
            "model_version": pd.Series([model_version] * len(clip_ids), dtype="Int64"),
            "checkpoint_sha256": pd.Series([checkpoint_sha256] * len(clip_ids), dtype="string"),
            EVENT_TIMESTAMP: stamp,
        }
    )
    repo_dir = write_repo(cfg)
    source_root = _local_or_url(repo_dir, cfg.source_uri)
    write_part(table, f"{source_root}/{EMBEDDING_VIEW}", stamp)
    definitions = feature_definitions(source_root, timedelta(days=cfg.ttl_days))
    view = embedding_view(source_root, timedelta(days=cfg.ttl_days))
    store = open_store(repo_dir)
    store.apply([definitions.entity, view])
    end = (stamp + pd.Timedelta(seconds=1)).to_pydatetime()
    with _quiet_dask():
        store.materialize(start_date=stamp.to_pydatetime(), end_date=end, feature_views=[EMBEDDING_VIEW])
    names = {v.name for v in store.list_feature_views()}
    refs = [f"{EMBEDDING_VIEW}:model_version", f"{EMBEDDING_VIEW}:embedding"]
    if METADATA_VIEW in names:
        refs += [f"{METADATA_VIEW}:split", f"{METADATA_VIEW}:audio_type"]
    example = get_online_clip_features(repo_dir, list(clip_ids[:1]), refs) if len(clip_ids) else {}
    for row in example.values():
        row["embedding"] = f"{len(row.get('embedding') or [])} floats"
    return EmbeddingReport(len(table), model_version, stamp.to_pydatetime(), example)

"""The ``features`` section of ``params.yaml``: where the feature store lives and which stores it uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from avlops.config import StrictModel

__all__ = ["FeaturesConfig"]


class FeaturesConfig(StrictModel):
    """A Feast store rendered into ``repo_dir``.

    Local defaults: a sqlite registry, a sqlite online store and parquet sources, all under ``repo_dir``. On a cluster
    point ``registry`` at a database URL (``postgresql+psycopg://...``) or an object-store file (``s3://.../registry.pb``),
    ``online_store`` at e.g. ``{type: redis, connection_string: "redis:6379,password=${REDIS_PASSWORD}"}`` and
    ``source_uri`` at shared storage (``s3://bucket/avlops/features``, needs the fsspec backend): ``${VARS}`` are kept
    as written and expanded by Feast when it loads the store, so secrets never land in files.
    """

    repo_dir: str = "artifacts/feast"
    manifest: str | None = Field(None, description="manifest JSONL of the clips (metadata features)")
    stats: str | None = Field(None, description="stats.parquet written by `avlops preprocess`")
    quarantine: list[str] = Field(
        default_factory=list,
        description="quarantine.jsonl files (`avlops data validate`, `data check`) whose clips are not published",
    )
    project: str = Field("avlops", pattern=r"^[A-Za-z0-9_]+$")
    #: relative paths and sqlite URLs are taken under repo_dir; other URLs are used as written
    registry: str = "sqlite:///registry.db"
    online_store: dict[str, Any] = Field(default_factory=lambda: {"type": "sqlite", "path": "online.db"})
    offline_store: dict[str, Any] = Field(default_factory=lambda: {"type": "file"})
    #: where the offline parquet sources are written: a folder (relative to repo_dir) or a URL
    source_uri: str = "data"
    #: how far back a point-in-time lookup may reach for a value; 0 = no limit (clip facts do not go stale)
    ttl_days: float = Field(0.0, ge=0.0)
    #: the event timestamp written with the features; None = now. Fix it to make a run reproducible.
    event_timestamp: datetime | None = None

"""Feast, and only here: the clip entity, the feature views, and the store avlops renders, fills and reads.

The committed feature repository (``infra/feast``) imports the module-level definitions below. At run time nothing is
written there: :func:`write_repo` renders a ``feature_store.yaml`` into a working folder (``FeaturesConfig.repo_dir``)
with absolute paths or URLs, next to its registry, online store and parquet sources, so the same code runs against a
local sqlite store and against shared stores on a cluster.
"""

from __future__ import annotations

# first: Feast imported without typeguard instrumenting its classes (avlops.features.unchecked)
import avlops.features.unchecked  # noqa: F401  # isort: skip
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, FeastType, Float64, Int64, String

from avlops.config import ConfigError
from avlops.data.exclusions import read_exclusions
from avlops.data.manifest import read_manifest
from avlops.data.stats import ColumnKind
from avlops.features.params import FeaturesConfig
from avlops.features.tables import (
    EVENT_TIMESTAMP,
    JOIN_KEY,
    METADATA_FEATURES,
    STATS_FEATURES,
    metadata_table,
    stats_table,
    to_utc,
    write_part,
)

__all__ = [
    "METADATA_VIEW",
    "STATS_VIEW",
    "FeatureDefinitions",
    "MaterializeReport",
    "clip",
    "clip_metadata",
    "clip_stats",
    "feature_definitions",
    "get_online_clip_features",
    "materialize_features",
    "open_store",
    "store_config",
    "training_frame",
    "write_repo",
]

METADATA_VIEW = "clip_metadata"
STATS_VIEW = "clip_stats"
FEAST_TYPES: dict[ColumnKind, FeastType] = {"str": String, "int": Int64, "float": Float64, "bool": Bool}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROW = "__avlops_row"  # carries the caller's row order through Feast's joins
_SQL_URL = re.compile(r"^(postgresql|mysql|mssql|oracle)(\+\w+)?://")


@contextmanager
def _quiet_dask() -> Iterator[None]:
    """Feast's parquet store runs on dask, whose pandas calls raise FutureWarnings: not ours, and not actionable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"dask\.")
        yield


@dataclass(frozen=True)
class FeatureDefinitions:
    """What ``apply`` registers: the entity and its feature views."""

    entity: Entity
    views: tuple[FeatureView, ...]

    @property
    def objects(self) -> list[Entity | FeatureView]:
        return [self.entity, *self.views]


def feature_definitions(source_root: str = "data", ttl: timedelta = timedelta(0)) -> FeatureDefinitions:
    """The clip entity and one view per offline table, reading ``<source_root>/<view name>/`` (parquet parts).

    A relative ``source_root`` is resolved by Feast against the repository folder. ``ttl`` 0 means no limit.
    """
    entity = Entity(
        name="clip", join_keys=[JOIN_KEY], value_type=ValueType.STRING, description="one clip of the manifest"
    )

    def view(name: str, features: dict[str, ColumnKind], description: str) -> FeatureView:
        return FeatureView(
            name=name,
            entities=[entity],
            ttl=ttl,
            schema=[Field(name=k, dtype=FEAST_TYPES[kind]) for k, kind in features.items()],
            source=FileSource(
                name=f"{name}_source", path=f"{source_root.rstrip('/')}/{name}", timestamp_field=EVENT_TIMESTAMP
            ),
            online=True,
            description=description,
            tags={"owner": "avlops"},
        )

    views = (
        view(METADATA_VIEW, METADATA_FEATURES, "clip facts from the manifest (the dataset contract)"),
        view(STATS_VIEW, STATS_FEATURES, "clip statistics measured by `avlops preprocess` (stats.parquet)"),
        # Clip embeddings (a later issue) join here as a third view, "clip_embedding", with
        # Field(name="embedding", dtype=Array(Float32)) over f"{source_root}/clip_embedding", written by the embedding
        # job through features.tables.write_part. Array(Float32) round-trips exactly through the sqlite online store;
        # its vector search does not work, so nearest-neighbour retrieval lives elsewhere.
    )
    return FeatureDefinitions(entity, views)


# The definitions the committed repository (infra/feast/features.py) registers; sources relative to that folder.
_DEFAULT = feature_definitions()
clip = _DEFAULT.entity
clip_metadata, clip_stats = _DEFAULT.views


def _local_or_url(repo_dir: Path, value: str) -> str:
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else repo_dir / p)


def store_config(cfg: FeaturesConfig, repo_dir: Path) -> dict[str, Any]:
    """The ``feature_store.yaml`` for ``cfg``, with local paths made absolute under ``repo_dir``."""
    registry: dict[str, Any]
    if cfg.registry.startswith("sqlite:///"):
        registry = {"registry_type": "sql", "path": "sqlite:///" + _local_or_url(repo_dir, cfg.registry[10:])}
    elif _SQL_URL.match(cfg.registry):
        registry = {"registry_type": "sql", "path": cfg.registry}
    else:  # a protobuf file: a local path, s3://, gs://
        registry = {"registry_type": "file", "path": _local_or_url(repo_dir, cfg.registry)}
    registry["cache_ttl_seconds"] = 60
    online = dict(cfg.online_store)
    if online.get("type", "sqlite") == "sqlite":
        online["path"] = _local_or_url(repo_dir, str(online.get("path", "online.db")))
    return {
        "project": cfg.project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": dict(cfg.offline_store),
        "entity_key_serialization_version": 3,
    }


def write_repo(cfg: FeaturesConfig) -> Path:
    """Render ``feature_store.yaml`` into ``cfg.repo_dir`` (created); return the folder, absolute."""
    repo_dir = Path(cfg.repo_dir).expanduser().resolve()
    repo_dir.mkdir(parents=True, exist_ok=True)
    header = "# Rendered by avlops from the [features] config; template: infra/feast/feature_store.yaml\n"
    text = header + yaml.safe_dump(store_config(cfg, repo_dir), sort_keys=False)
    (repo_dir / "feature_store.yaml").write_text(text, encoding="utf-8")
    return repo_dir


def open_store(repo_dir: str | Path) -> FeatureStore:
    """The Feast store rendered in ``repo_dir``."""
    repo = Path(repo_dir).expanduser().resolve()
    if not (repo / "feature_store.yaml").is_file():
        raise FileNotFoundError(f"{repo}: no feature_store.yaml (run `avlops features materialize` first)")
    return FeatureStore(repo_path=str(repo))


@dataclass(frozen=True)
class MaterializeReport:
    repo_dir: Path
    event_timestamp: datetime
    rows: dict[str, int]  # view -> rows written to its offline table
    skipped_records: int  # manifest lines that break the contract (see `avlops data check`)
    dropped: dict[str, str]  # quarantined clips left out of both views: clip_id -> why
    example: dict[str, dict[str, Any]]  # an online lookup of the first clips, read back after materializing


def materialize_features(cfg: FeaturesConfig, now: datetime | None = None) -> MaterializeReport:
    """Write the offline tables from ``cfg.manifest`` and ``cfg.stats``, ``apply`` the definitions, and load the
    online store: incrementally, or from the beginning for a view never materialized.

    Clips of ``cfg.quarantine`` are left out of both tables (``MaterializeReport.dropped`` says which and why). When
    any is, the online tables of the two views are rebuilt from this run's rows alone, so a clip published by an
    earlier run and quarantined since has no online value left; older offline parts keep their history as it was.
    """
    if not cfg.manifest or not cfg.stats:
        raise ConfigError("features: both a manifest and a stats table are needed (--manifest, --stats)")
    exclude = read_exclusions(cfg.quarantine)  # before any work: a missing quarantine file is a usage error
    kept, problems = read_manifest(Path(cfg.manifest))
    stats_path = Path(cfg.stats)
    if not stats_path.is_file():
        raise FileNotFoundError(f"{stats_path}: statistics table not found")
    now_utc = to_utc(now)
    at = to_utc(cfg.event_timestamp) if cfg.event_timestamp is not None else now_utc
    repo_dir = write_repo(cfg)
    source_root = _local_or_url(repo_dir, cfg.source_uri)
    tables = {
        METADATA_VIEW: metadata_table((k.record for k in kept), at),
        STATS_VIEW: stats_table(pd.read_parquet(stats_path), at),
    }
    dropped = {
        str(c): exclude[str(c)] for t in tables.values() for c in t[JOIN_KEY] if pd.notna(c) and str(c) in exclude
    }
    tables = {name: t[~t[JOIN_KEY].isin(list(dropped))].reset_index(drop=True) for name, t in tables.items()}
    for name, table in tables.items():
        write_part(table, f"{source_root}/{name}", at)

    definitions = feature_definitions(source_root, timedelta(days=cfg.ttl_days))
    store = open_store(repo_dir)
    if dropped:  # drop the views' online tables (and their load history); re-applied and loaded from ``at`` below
        held = {v.name for v in store.list_feature_views()}
        stale = [v for v in definitions.views if v.name in held]
        if stale:
            store.apply([], objects_to_delete=list(stale), partial=False)
    store.apply([definitions.entity, *definitions.views])
    end = max(now_utc, at + pd.Timedelta(seconds=1)).to_pydatetime()
    for view in definitions.views:
        last_end = store.get_feature_view(view.name).most_recent_end_time
        if dropped:  # only this run's part: earlier parts still hold the quarantined clips
            with _quiet_dask():
                store.materialize(start_date=at.to_pydatetime(), end_date=end, feature_views=[view.name])
        elif last_end is None or at < last_end:
            # first load, or a backfill stamped before the last load (materialize_incremental would skip it): load
            # the window from ``at``; per clip the latest value in it wins, so newer values stay on top
            start = _EPOCH if last_end is None else at.to_pydatetime()
            with _quiet_dask():
                store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        else:
            with _quiet_dask():
                store.materialize_incremental(end_date=end, feature_views=[view.name])
    sample = list(tables[STATS_VIEW][JOIN_KEY][:2]) or list(tables[METADATA_VIEW][JOIN_KEY][:2])
    own = [f"{v.name}:{f.name}" for v in definitions.views for f in v.features]  # not other producers' views
    return MaterializeReport(
        repo_dir=repo_dir,
        event_timestamp=at.to_pydatetime(),
        rows={k: len(v) for k, v in tables.items()},
        skipped_records=len(problems),
        dropped=dropped,
        example=get_online_clip_features(repo_dir, [str(c) for c in sample], own) if sample else {},
    )


def _feature_refs(store: FeatureStore, features: Sequence[str] | None) -> list[str]:
    if features:
        return list(features)
    views = sorted(store.list_feature_views(), key=lambda v: v.name)
    return [f"{fv.name}:{f.name}" for fv in views for f in fv.features]  # views by name, features as defined


def get_online_clip_features(
    repo_dir: str | Path, clip_ids: Sequence[str], features: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Latest feature values per clip from the online store: ``{clip_id: {feature: value}}``.

    ``features`` are ``"view:feature"`` references (default: every feature); unknown clips get ``None`` values.
    """
    store = open_store(repo_dir)
    refs = _feature_refs(store, features)
    got = store.get_online_features(features=refs, entity_rows=[{JOIN_KEY: c} for c in clip_ids]).to_dict()
    names = [r.partition(":")[2] for r in refs]  # in the order asked for
    return {cid: {k: got[k][i] for k in names} for i, cid in enumerate(got[JOIN_KEY])}


def _source_keys(store: FeatureStore, view: FeatureView) -> set[str] | None:
    """The clip ids a parquet source holds, or None for other sources."""
    source = view.batch_source
    if not isinstance(source, FileSource):
        return None
    uri = FileSource.get_uri_for_file_path(store.repo_path, source.path)
    return set(pd.read_parquet(uri, columns=[JOIN_KEY])[JOIN_KEY].astype(str))


def training_frame(
    repo_dir: str | Path, entity_df: pd.DataFrame, features: Sequence[str] | None = None
) -> pd.DataFrame:
    """Point-in-time correct features for ``entity_df`` (columns ``clip_id`` and ``event_timestamp``).

    Each row gets the values that were current at its timestamp (``get_historical_features``), never later ones.
    Rows keep their order and count; a clip without a value at that time gets missing values. (Feast's parquet store
    drops such rows, or fails on clips it has never seen, so each view is asked only about clips it holds.)
    """
    missing = {JOIN_KEY, EVENT_TIMESTAMP} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}")
    store = open_store(repo_dir)
    out = entity_df.reset_index(drop=True).copy()
    out[EVENT_TIMESTAMP] = pd.to_datetime(out[EVENT_TIMESTAMP], utc=True)
    out[_ROW] = range(len(out))
    by_view: dict[str, list[str]] = defaultdict(list)
    for ref in _feature_refs(store, features):
        view_name, _, name = ref.partition(":")
        by_view[view_name].append(name)
    for view_name, names in by_view.items():
        rows = out[[JOIN_KEY, EVENT_TIMESTAMP, _ROW]].astype({JOIN_KEY: "string"})  # the sources' dtype
        keys = _source_keys(store, store.get_feature_view(view_name))
        if keys is not None:
            rows = rows[rows[JOIN_KEY].isin(keys)]
        got = pd.DataFrame(columns=[_ROW, *names])
        if not rows.empty:
            refs = [f"{view_name}:{n}" for n in names]
            with _quiet_dask():
                got = store.get_historical_features(entity_df=rows, features=refs).to_df()[[_ROW, *names]]
        out = out.merge(got, on=_ROW, how="left")
    return out.sort_values(_ROW).drop(columns=_ROW).reset_index(drop=True)

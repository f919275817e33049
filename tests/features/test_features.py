"""The Feast feature store: a real local store in tmp_path, materialized twice, read online and point-in-time."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from avlops.cli import ExitCode
from avlops.cli.features import register
from avlops.data.schema import parse_record
from avlops.features.params import FeaturesConfig
from avlops.features.tables import entity_frame, metadata_table, stats_table, write_part

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = pd.Timestamp("2024-01-01T00:00:00Z")
T1 = pd.Timestamp("2024-02-01T00:00:00Z")
CLIPS: list[dict[str, Any]] = [
    {
        "clip_id": "c0",
        "video": "c0.mp4",
        "captions": ["a dog barks", "woof"],
        "audio_type": "nonverbal",
        "split": "train",
        "source": "synth",
    },
    {
        "clip_id": "c1",
        "video": "c1.mp4",
        "captions": ["hello there"],
        "audio_type": "verbal",
        "split": "val",
        "source": "synth",
    },
    {"clip_id": "c2", "video": "c2.jpg", "captions": ["a still image"], "split": "test", "source": "web"},
]


def stats(duration_c0: float) -> pd.DataFrame:
    """stats.parquet as `avlops preprocess` writes it; c2 is a still image without sound."""
    rows = []
    for c in CLIPS:
        sounded, still = "audio_type" in c, c["video"].endswith(".jpg")
        rows.append(
            {
                "clip_id": c["clip_id"],
                "split": c["split"],
                "source": c["source"],
                "audio_type": c.get("audio_type", "unknown"),
                "duration_s": 0.0 if still else 3.0,
                "frame_count": 1 if still else 24,
                "fps": None if still else 8.0,
                "sample_rate": 16000 if sounded else None,
                "channels": 1 if sounded else None,
                "has_audio": sounded,
                "has_video": True,
                "loudness_dbfs": -20.5 if sounded else -120.0,
                "caption_count": len(c["captions"]),
                "caption_chars_max": max(map(len, c["captions"])),
                "width": 64,
                "height": 48,
                "notes": "resampled 44100 Hz to 16000 Hz" if sounded else "",
                "shard": f"{c['split']}-00000",
            }
        )
    df = pd.DataFrame(rows).astype({"fps": "Float64", "sample_rate": "Int64", "channels": "Int64"})
    df.loc[0, "duration_s"] = duration_c0
    return df


def run_cli(argv: list[str]) -> int:
    """The handlers `avlops features ...` runs, through the parser `register` builds."""
    parser = argparse.ArgumentParser(prog="avlops")
    register(parser.add_subparsers(dest="cmd", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return int(args.handler(args))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store materialized at T0 (library call), then at T1 with c0's duration changed (CLI)."""
    from avlops.features.store import materialize_features

    tmp = tmp_path_factory.mktemp("feast")
    manifest = tmp / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(c) + "\n" for c in CLIPS) + '{"clip_id": "broken"}\n')
    for name, df in {"t0": stats(3.0), "t1": stats(5.0)}.items():
        df.to_parquet(tmp / f"stats_{name}.parquet")
    repo = tmp / "repo"
    cfg = FeaturesConfig(
        repo_dir=str(repo),
        manifest=str(manifest),
        stats=str(tmp / "stats_t0.parquet"),
        event_timestamp=T0.to_pydatetime(),
    )
    report = materialize_features(cfg)
    assert report.rows == {"clip_metadata": 3, "clip_stats": 3} and report.skipped_records == 1
    assert report.example["c0"]["duration_s"] == 3.0
    rc = run_cli(
        [
            "features",
            "materialize",
            "--manifest",
            str(manifest),
            "--stats",
            str(tmp / "stats_t1.parquet"),
            "--repo-dir",
            str(repo),
            "--event-timestamp",
            T1.isoformat(),
        ]
    )
    assert rc == ExitCode.OK
    yield repo


def test_online_lookup_returns_latest_values(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from avlops.features.store import get_online_clip_features

    got = get_online_clip_features(store, ["c0", "c2", "nope"])
    assert got["c0"]["duration_s"] == 5.0  # the T1 value
    assert got["c0"] | {"duration_s": None} == {
        "split": "train",
        "audio_type": "nonverbal",
        "source": "synth",
        "caption_count": 2,
        "duration_s": None,
        "frame_count": 24,
        "fps": 8.0,
        "sample_rate": 16000,
        "channels": 1,
        "has_audio": True,
        "has_video": True,
        "loudness_dbfs": -20.5,
        "caption_chars_max": 11,
        "width": 64,
        "height": 48,
        "notes": "resampled 44100 Hz to 16000 Hz",
    }
    assert got["c2"]["audio_type"] == "unknown" and got["c2"]["has_audio"] is False
    assert got["c2"]["sample_rate"] is None and got["c2"]["fps"] is None  # not measured: missing, not 0
    assert set(got["nope"].values()) == {None}
    assert run_cli(["features", "lookup", "c1", "--repo-dir", str(store)]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["c1"]["split"] == "val"


def test_historical_features_are_point_in_time_correct(store: Path) -> None:
    from avlops.features.store import training_frame

    when = ["2024-01-15", "2024-03-01", "2023-06-01", "2024-03-01", "2024-01-15"]
    entities = entity_frame(["c0", "c0", "c0", "unknown", "c1"], [pd.Timestamp(w, tz="UTC") for w in when])
    entities["label"] = [1, 2, 3, 4, 5]  # the caller's own columns come back untouched
    df = training_frame(store, entities, ["clip_stats:duration_s", "clip_metadata:split"])
    assert df["label"].tolist() == [1, 2, 3, 4, 5]
    assert df["clip_id"].tolist() == ["c0", "c0", "c0", "unknown", "c1"]
    assert df["duration_s"].tolist()[:2] == [3.0, 5.0]  # T0's value before T1, T1's after
    assert math.isnan(df["duration_s"][2]) and math.isnan(df["duration_s"][3])  # before any value; unknown clip
    assert df["split"].tolist()[:2] == ["train", "train"] and df["split"][4] == "val"
    assert pd.isna(df["split"][2]) and pd.isna(df["split"][3])


def test_working_store_is_self_contained(store: Path) -> None:
    conf = yaml.safe_load((store / "feature_store.yaml").read_text())
    assert conf["registry"]["path"] == f"sqlite:///{store / 'registry.db'}"
    assert conf["online_store"] == {"type": "sqlite", "path": str(store / "online.db")}
    parts = sorted(p.name for p in (store / "data" / "clip_stats").iterdir())
    assert parts == ["20240101T000000000000Z.parquet", "20240201T000000000000Z.parquet"]
    infra = REPO_ROOT / "infra" / "feast"
    assert not [n for n in ("data", "registry.db", "online.db") if (infra / n).exists()]  # the template stays clean


def test_store_config_for_cluster_stores(tmp_path: Path) -> None:
    from avlops.features.store import store_config

    cfg = FeaturesConfig(
        registry="postgresql+psycopg://u:${FEAST_DB_PASSWORD}@db:5432/feast",
        online_store={"type": "redis", "connection_string": "redis:6379,password=${REDIS_PASSWORD}"},
    )
    conf = store_config(cfg, tmp_path)
    assert conf["registry"]["registry_type"] == "sql" and "${FEAST_DB_PASSWORD}" in conf["registry"]["path"]
    assert conf["online_store"]["connection_string"].endswith("${REDIS_PASSWORD}")  # Feast expands it at load
    s3 = store_config(FeaturesConfig(registry="s3://bucket/registry.pb"), tmp_path)["registry"]
    assert s3["registry_type"] == "file" and s3["path"] == "s3://bucket/registry.pb"


def test_committed_repo_matches_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """infra/feast: its yaml has the rendered store's shape, and Feast finds the library's definitions in it."""
    from feast.repo_operations import parse_repo

    from avlops.features.store import store_config

    template = yaml.safe_load((REPO_ROOT / "infra" / "feast" / "feature_store.yaml").read_text())
    rendered = store_config(FeaturesConfig(), tmp_path)
    for key in ("project", "provider", "entity_key_serialization_version"):
        assert template[key] == rendered[key]
    assert template["registry"]["registry_type"] == rendered["registry"]["registry_type"]
    assert template["online_store"]["type"] == rendered["online_store"]["type"]
    assert template["offline_store"] == rendered["offline_store"]

    # parse as `feast apply` does (from the repo folder, which it puts on sys.path), on a copy: infra stays clean
    copy = shutil.copytree(REPO_ROOT / "infra" / "feast", tmp_path / "repo")
    monkeypatch.chdir(copy)
    monkeypatch.syspath_prepend(str(copy))
    monkeypatch.delitem(sys.modules, "features", raising=False)
    contents = parse_repo(copy)
    monkeypatch.delitem(sys.modules, "features")
    assert {e.name for e in contents.entities} - {"__dummy"} == {"clip"}  # Feast adds a dummy for entityless views
    assert {v.name for v in contents.feature_views} == {"clip_metadata", "clip_stats"}


def test_tables_follow_the_contracts(tmp_path: Path) -> None:
    records = [parse_record(c) for c in CLIPS]
    meta = metadata_table(records, T0)
    assert meta.columns.tolist() == ["clip_id", "split", "audio_type", "source", "caption_count", "event_timestamp"]
    assert meta["audio_type"].tolist() == ["nonverbal", "verbal", "unknown"]
    table = stats_table(stats(3.0), T0)
    assert "split" not in table and "loudness_dbfs" in table  # the manifest owns the metadata
    with pytest.raises(ValueError, match="loudness_dbfs"):
        stats_table(stats(3.0).drop(columns="loudness_dbfs"), T0)
    for _ in range(2):  # the same timestamp replaces its own part: reruns do not duplicate history
        write_part(table, str(tmp_path / "t"), T0)
    assert len(list((tmp_path / "t").iterdir())) == 1
    with pytest.raises(ValueError, match="timestamps"):
        entity_frame(["a", "b"], [T0])


def test_quarantined_clips_are_left_out_of_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clip published by one run and quarantined by `data validate` since: the next run leaves it out of both views,
    offline and online, and says how many it dropped and why; a missing quarantine file is named."""
    from avlops.features.store import get_online_clip_features, materialize_features

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(c) + "\n" for c in CLIPS))
    stats(3.0).to_parquet(tmp_path / "stats.parquet")
    repo = tmp_path / "repo"
    cfg = FeaturesConfig(repo_dir=str(repo), manifest=str(manifest), stats=str(tmp_path / "stats.parquet"))
    first = materialize_features(cfg.model_copy(update={"event_timestamp": T0.to_pydatetime()}))
    assert first.dropped == {} and get_online_clip_features(repo, ["c1"])["c1"]["split"] == "val"

    quarantine = tmp_path / "quarantine.jsonl"
    reason = "silent audio: the manifest says verbal but the track is silent"
    quarantine.write_text(json.dumps({"source": str(manifest), "line": 2, "clip_id": "c1", "reasons": [reason]}) + "\n")
    base = ["features", "materialize", "--manifest", str(manifest), "--stats", str(tmp_path / "stats.parquet")]
    args = [*base, "--repo-dir", str(repo), "--event-timestamp", T1.isoformat()]
    assert run_cli([*args, "--quarantine", str(quarantine)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "clip_metadata: 2 clips, clip_stats: 2 clips" in out
    assert f"dropped 1 quarantined clip(s) from the feature store: 1 x {reason}" in out

    got = get_online_clip_features(repo, ["c0", "c1", "c2"])
    assert set(got["c1"].values()) == {None}  # no online value left for the quarantined clip
    assert got["c0"]["split"] == "train" and got["c2"]["split"] == "test" and got["c0"]["duration_s"] == 3.0
    part = pd.read_parquet(repo / "data" / "clip_metadata" / "20240201T000000000000Z.parquet")
    assert sorted(part["clip_id"]) == ["c0", "c2"]

    assert run_cli([*args, "--quarantine", str(tmp_path / "absent.jsonl")]) == ExitCode.INPUT
    assert "absent.jsonl: quarantine file not found" in capsys.readouterr().err

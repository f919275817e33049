"""Great Expectations validation: suites from the contract, Data Docs, summary, quarantine and the gate."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from avlops.cli import ExitCode
from avlops.cli.validate import register
from avlops.config import ConfigError, build, override
from avlops.data.schema import AudioType, Split
from avlops.validation.frames import manifest_frame, stats_frame
from avlops.validation.params import ValidateConfig

CLIPS: list[dict[str, Any]] = [
    {
        "clip_id": "c0",
        "video": "v/c0.mp4",
        "captions": ["a red circle moves left", "a circle"],
        "audio_type": "verbal",
        "split": "train",
        "source": "synth",
    },
    {
        "clip_id": "c1",
        "video": "v/c1.mp4",
        "captions": ["a blue square with a beep"],
        "audio_type": "nonverbal",
        "split": "train",
        "source": "synth",
    },
    {
        "clip_id": "c2",
        "video": "v/c2.mp4",
        "captions": ["a green triangle, silent"],
        "split": "train",
        "source": "synth",
    },
    {
        "clip_id": "c3",
        "audio": "a/c3.wav",
        "captions": ["someone says hello"],
        "audio_type": "verbal",
        "split": "val",
        "source": "synth",
    },
    {
        "clip_id": "c4",
        "video": "v/c4.mp4",
        "captions": ["a yellow star spins"],
        "audio_type": "mixed",
        "split": "test",
        "source": "synth",
    },
    {"clip_id": "c5", "video": "v/c5.jpg", "captions": ["a still photo of a cat"], "split": "test", "source": "synth"},
]


def write_manifest(path: Path, clips: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(c) for c in clips] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: the dtypes `avlops preprocess` writes (nullable where a clip may lack the thing measured)
STATS_DTYPES = {"fps": "Float64", "sample_rate": "Int64", "channels": "Int64", "width": "Int64", "height": "Int64"}


def stats_for(clips: list[dict[str, Any]]) -> pd.DataFrame:
    """A stats.parquet table as `avlops preprocess` writes it, all values healthy."""
    rows = []
    for c in clips:
        video, sounded = "video" in c, c.get("audio_type", "unknown") != "unknown"
        still = video and c["video"].endswith(".jpg")
        rows.append(
            {
                "clip_id": c["clip_id"],
                "split": c["split"],
                "source": c["source"],
                "audio_type": c.get("audio_type", "unknown"),
                "duration_s": 0.0 if still and not sounded else 3.0,  # a bare still has no duration
                "frame_count": (1 if still else 24) if video else 0,
                "fps": None if still or not video else 8.0,
                "sample_rate": 16000 if sounded else None,
                "channels": 1 if sounded else None,
                "has_audio": sounded,
                "has_video": video,
                "loudness_dbfs": -20.0 if sounded else -120.0,
                "caption_count": len(c["captions"]),
                "caption_chars_max": max(len(t) for t in c["captions"]),
                "width": 64 if video else None,
                "height": 48 if video else None,
                "notes": "",
                "shard": f"{c['split']}-00000",
            }
        )
    return pd.DataFrame(rows).astype(STATS_DTYPES)


def dataset(
    tmp: Path, clips: list[dict[str, Any]], stats: pd.DataFrame | None = None, **lines: Any
) -> tuple[Path, Path]:
    manifest = write_manifest(tmp / "data" / "manifest.jsonl", clips, **lines)
    stats_path = tmp / "pre" / "stats.parquet"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    (stats if stats is not None else stats_for(clips)).to_parquet(stats_path)
    return manifest, stats_path


def run_cli(argv: list[str]) -> int:
    """The handler `avlops data validate` runs, through the same parser it registers."""
    parser = argparse.ArgumentParser(prog="avlops data")
    register(parser.add_subparsers(dest="cmd", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return int(args.handler(args))


def quarantined(out: Path) -> dict[str, list[str]]:
    by_clip: dict[str, list[str]] = {}
    for line in (out / "quarantine.jsonl").read_text().splitlines():
        p = json.loads(line)
        by_clip.setdefault(p["clip_id"], []).extend(p["reasons"])
    return by_clip


# --- frames: pure pandas, no Great Expectations -------------------------------------------------------------------


def test_manifest_frame_derives_leakage_and_split_conflicts(tmp_path: Path) -> None:
    clips = [
        *CLIPS,
        {**CLIPS[4], "clip_id": "c6", "captions": ["A  red circle moves LEFT"]},
        {**CLIPS[1], "split": "val"},
    ]
    df, problems = manifest_frame(write_manifest(tmp_path / "m.jsonl", clips, ("{not json",)))
    assert [p.line for p in problems] == [len(clips) + 1]
    leaks = df.set_index("line")["caption_leak"]
    assert leaks[1] and leaks[7] and leaks.sum() == 2  # the train clip and the test clip sharing a caption
    assert "also in test clip c6" in df.loc[0, "leak_detail"]
    assert df.loc[df["clip_id"] == "c1", "split_conflict"].all() and df["split_conflict"].sum() == 2
    assert df["conforms"].all() and df["has_media"].all()


def test_stats_frame_marks_orphans_and_video() -> None:
    manifest = pd.DataFrame({"clip_id": ["a", "b"], "has_video": [True, False]})
    out = stats_frame(pd.DataFrame({"clip_id": ["a", "b", "zz"]}), manifest)
    assert out["in_manifest"].tolist() == [True, True, False]
    assert out["has_video"].tolist() == [True, False, True]


def test_config_rejects_bad_ranges() -> None:
    with pytest.raises(ConfigError, match="min_duration_s"):
        build(ValidateConfig, {"min_duration_s": 5, "max_duration_s": 1})
    with pytest.raises(ConfigError, match="leak_splits"):
        build(ValidateConfig, {"leak_splits": ["train"]})
    with pytest.raises(ConfigError, match="unknown_key"):
        build(ValidateConfig, {"unknown_key": 1})


# --- suites and runs (Great Expectations) -------------------------------------------------------------------------


def test_suites_follow_the_contract() -> None:
    from avlops.validation.suites import manifest_suite, stats_suite

    sets = {
        e.column: set(e.value_set)
        for e in manifest_suite(ValidateConfig()).expectations
        if type(e).__name__ == "ExpectColumnValuesToBeInSet"
    }
    assert sets["split"] == {s.value for s in Split}
    assert sets["audio_type"] == {a.value for a in AudioType}
    stats = stats_suite(ValidateConfig(min_loudness_dbfs=-50)).expectations
    loud = next(e for e in stats if getattr(e, "column", None) == "loudness_dbfs")
    assert loud.min_value == -50 and loud.row_condition is not None


def test_good_dataset_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, stats = dataset(tmp_path, CLIPS)
    out = tmp_path / "report"
    rc = run_cli(["validate", "--manifest", str(manifest), "--stats", str(stats), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == ExitCode.OK, printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["quarantined"] == 0 and summary["clips_without_stats"] == 0
    assert all(e["success"] for e in summary["expectations"])
    assert {e["suite"] for e in summary["expectations"]} == {"manifest", "stats"}
    assert (out / "quarantine.jsonl").read_text() == ""
    docs = out / "data_docs" / "index.html"
    assert docs.is_file() and str(docs) in printed
    assert len(list((out / "data_docs" / "validations").rglob("*.html"))) == 2  # one page per suite


def test_bad_dataset_fails_the_gate_and_quarantines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = [dict(c) for c in CLIPS]
    clips[5]["captions"] = ["a red circle moves left"]  # test clip c5 repeats a caption of train clip c0
    clips[2]["audio_type"] = "loud"  # not an AudioType
    stats = stats_for(CLIPS)
    stats.loc[stats["clip_id"] == "c0", "loudness_dbfs"] = -119.0  # silent, but labelled verbal
    stats.loc[stats["clip_id"] == "c1", "duration_s"] = 0.01  # too short
    stats.loc[stats["clip_id"] == "c4", "has_audio"] = False  # mixed, yet no audio track
    manifest, stats_path = dataset(tmp_path, clips, stats, extra_lines=("[1, 2]",))
    out = tmp_path / "report"

    rc = run_cli(
        [
            "validate",
            "--manifest",
            str(manifest),
            "--stats",
            str(stats_path),
            "--out",
            str(out),
            "--max-bad-fraction",
            "1.0",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == ExitCode.FAILED  # the caption leak is dataset-level: no bad fraction excuses it
    assert "caption shared between train and test" in printed

    bad = quarantined(out)
    assert set(bad) == {None, "c0", "c1", "c2", "c4", "c5"}
    assert any("silent audio" in r and "loudness_dbfs=-119.0" in r for r in bad["c0"])
    assert any("caption 'a red circle moves left' also in test clip c5" in r for r in bad["c0"])
    assert any("also in train clip c0" in r for r in bad["c5"])
    assert any("duration out of range" in r for r in bad["c1"])
    assert any("unknown audio_type (audio_type='loud')" in r for r in bad["c2"])
    assert any("no audio track" in r for r in bad["c4"])
    assert any("expected a JSON object" in r for r in bad[None])

    summary = json.loads((out / "summary.json").read_text())
    assert not summary["passed"] and summary["quarantined"] == 6 and summary["records"] == 7
    assert summary["failed_dataset_expectations"] == ["manifest: caption shared between train and test"]
    silent = next(e for e in summary["expectations"] if e["column"] == "loudness_dbfs")
    assert not silent["success"] and silent["unexpected_count"] == 1
    assert silent["examples"] == [{"row": 1, "clip_id": "c0", "value": -119.0}]
    assert (out / "data_docs" / "index.html").is_file()


def test_bad_fraction_gate(tmp_path: Path) -> None:
    from avlops.validation.run import validate_dataset

    stats = stats_for(CLIPS)
    stats.loc[stats["clip_id"] == "c3", "loudness_dbfs"] = -90.0  # one silent verbal clip of six
    manifest, stats_path = dataset(tmp_path, CLIPS, stats)
    cfg = ValidateConfig(manifest=str(manifest), stats=str(stats_path), out=str(tmp_path / "r"))
    report = validate_dataset(override(cfg, max_bad_fraction=0.2))
    assert report.passed and report.bad == 1 and [(p.clip_id, p.line) for p in report.problems] == [("c3", 4)]
    strict = replace(report, config=override(cfg, max_bad_fraction=0.1))  # 1 of 6 bad is above 10%
    assert not strict.passed and not strict.failed_dataset


def test_missing_stats_column_is_dataset_level(tmp_path: Path) -> None:
    from avlops.validation.run import validate_dataset

    manifest, stats_path = dataset(tmp_path, CLIPS, stats_for(CLIPS).drop(columns=["loudness_dbfs"]))
    report = validate_dataset(ValidateConfig(manifest=str(manifest), stats=str(stats_path), out=str(tmp_path / "r")))
    failed = {o.reason.split(" (")[0] for o in report.failed_dataset}
    assert "the statistics table lacks columns of the contract" in failed
    assert any(o.column == "loudness_dbfs" and o.error for o in report.failed_dataset)
    assert not report.passed


def test_manifest_only_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", CLIPS)
    assert run_cli(["validate", "--manifest", str(manifest), "--out", str(tmp_path / "r")]) == ExitCode.OK
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stats"] is None and {e["suite"] for e in summary["expectations"]} == {"manifest"}
    assert run_cli(["validate", "--help"]) == 0
    assert "Data Docs" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        run_cli(["validate", "--manifest", str(manifest), "--stats", str(tmp_path / "nope.parquet")])

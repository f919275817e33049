"""Checking a manifest and its media, through the library and through ``avlops data check``.

One manifest holds good records and one line per bad-input case; each case must be quarantined with its line and
reason, the good records kept, and the exit code must follow the bad-fraction threshold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import pytest

import avlops.data.manifest
from avlops.cli import ExitCode, main
from avlops.data.manifest import Problem, check_manifest, read_manifest, write_manifest
from avlops.data.schema import parse_record

if TYPE_CHECKING:
    from conftest import SampleMedia


def rec(clip_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"clip_id": clip_id, "captions": [f"caption of {clip_id}"], "split": "train", "source": "t"}
    return base | fields


def write_lines(path: Path, lines: list[dict[str, Any] | bytes]) -> None:
    raw = [x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")


@pytest.fixture
def dataset(tmp_path: Path, sample_media: SampleMedia) -> Path:
    """A dataset root with good media, broken media and a file outside the root that a symlink points to."""
    root = tmp_path / "ds"
    (root / "media").mkdir(parents=True)
    shutil.copy(sample_media.video, root / "media/av.mp4")
    shutil.copy(sample_media.mute_video, root / "media/mute.mp4")
    shutil.copy(sample_media.wav, root / "media/tone.wav")
    shutil.copy(sample_media.image, root / "media/still.png")
    (root / "media/garbage.mp4").write_bytes(b"\x00garbage, not an mp4\xff" * 64)
    whole = sample_media.video.read_bytes()
    (root / "media/truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "media/empty.mp4").write_bytes(b"")
    outside = tmp_path / "outside" / "secret.mp4"
    outside.parent.mkdir()
    shutil.copy(sample_media.video, outside)
    (root / "media/link.mp4").symlink_to(outside)
    return root


#: (manifest line, expected reason, found by) for every bad-input case; reason None marks a good record.
#: "read" problems break the schema or the line's encoding; "check" problems need the media or other records.
CASES: list[tuple[dict[str, Any] | bytes, str | None, str]] = [
    (rec("good-av", video="media/av.mp4", audio_type="mixed"), None, ""),
    (rec("good-mute", video="media/mute.mp4"), None, ""),
    (rec("good-audio", audio="media/tone.wav", audio_type="nonverbal"), None, ""),
    (rec("good-still", video="media/still.png"), None, ""),
    (rec("good-still-sound", video="media/still.png", audio="media/tone.wav", audio_type="verbal"), None, ""),
    (rec("missing", video="media/nope.mp4"), "file not found", "check"),
    (rec("garbage", video="media/garbage.mp4"), "cannot decode", "check"),
    (rec("truncated", video="media/truncated.mp4"), "cannot decode", "check"),
    (rec("empty-file", video="media/empty.mp4"), "file is empty", "check"),
    (rec("empty-caption", video="media/av.mp4", captions=[""]), "caption 0 is empty or whitespace", "read"),
    (rec("blank-caption", video="media/av.mp4", captions=["ok", "   "]), "caption 1 is empty or whitespace", "read"),
    (rec("long-caption", video="media/av.mp4", captions=["w" * 10_000]), "has 10000 characters", "read"),
    (rec("good-av", video="media/av.mp4"), "duplicate clip_id (first seen on line 1)", "check"),
    (rec("bad-type", video="media/av.mp4", audio_type="loud"), "audio_type: unknown value 'loud'", "read"),
    (rec("bad-split", video="media/av.mp4", split="dev"), "split: unknown value 'dev'", "read"),
    (b'{"clip_id": "latin1", "captions": ["caf\xe9"], "video": "media/av.mp4"}', "not valid UTF-8", "read"),
    (b'{"clip_id": "broken", "captions": [', "not valid JSON", "read"),
    (b'["an", "array"]', "expected a JSON object", "read"),
    (rec("dotdot", video="../../etc/passwd"), "escapes the dataset root", "read"),
    (rec("absolute", video="/etc/passwd"), "is absolute", "read"),
    (rec("symlink-out", video="media/link.mp4"), "resolves outside the dataset root", "check"),
    (rec("mute-claims-sound", video="media/mute.mp4", audio_type="nonverbal"), "no audio track", "check"),
    (rec("audio-is-mute", video="media/av.mp4", audio="media/mute.mp4"), "has no audio stream", "check"),
]
LINES = [line for line, _, _ in CASES]
GOOD = [line["clip_id"] for line, reason, _ in CASES if reason is None and isinstance(line, dict)]


def test_read_manifest_reports_schema_encoding_and_json_problems_by_line(dataset: Path) -> None:
    write_lines(dataset / "manifest.jsonl", LINES)
    kept, problems = read_manifest(dataset / "manifest.jsonl")
    by_line = {p.line: "; ".join(p.reasons) for p in problems}
    expected = {n: reason for n, (_, reason, stage) in enumerate(CASES, start=1) if stage == "read"}
    assert by_line.keys() == expected.keys()
    for n, reason in expected.items():
        assert reason in by_line[n], f"line {n}: {by_line[n]}"
    assert len(kept) + len(problems) == len(CASES)


def test_check_manifest_quarantines_each_bad_case_with_line_and_reason(dataset: Path) -> None:
    write_lines(dataset / "manifest.jsonl", LINES)
    report = check_manifest(dataset / "manifest.jsonl", progress=False)
    assert [r.clip_id for r in report.records] == GOOD
    by_line: dict[int | None, Problem] = {p.line: p for p in report.problems}
    for n, (_, expected, _) in enumerate(CASES, start=1):
        if expected is None:
            assert n not in by_line
        else:
            assert expected in "; ".join(by_line[n].reasons), f"line {n}: {by_line[n].format()}"
            assert by_line[n].source == str(dataset / "manifest.jsonl")
    assert report.total == len(CASES)
    assert report.summary()["by_split"] == {"train": len(GOOD)}


def test_symlink_out_of_the_root_is_never_opened(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path check happens before any file is opened: neither the prober nor FFmpeg sees the outside file."""
    probed: list[Path] = []
    opened: list[str] = []
    real_probe, real_open = avlops.data.manifest.probe, av.open

    def recording_probe(path: Path, **kw: Any) -> Any:
        probed.append(Path(path))
        return real_probe(path, **kw)

    def recording_open(file: Any, *args: Any, **kw: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(avlops.data.manifest, "probe", recording_probe)
    monkeypatch.setattr(av, "open", recording_open)
    write_lines(
        dataset / "manifest.jsonl",
        [rec("in", video="media/av.mp4"), rec("out", video="media/link.mp4"), rec("up", video="../outside/secret.mp4")],
    )
    report = check_manifest(dataset / "manifest.jsonl", progress=False)
    assert [r.clip_id for r in report.records] == ["in"]
    assert probed == [(dataset / "media/av.mp4").resolve()]
    outside = (dataset.parent / "outside" / "secret.mp4").resolve()
    assert opened == [str((dataset / "media/av.mp4").resolve())]
    assert all(Path(p).resolve() != outside for p in [*map(str, probed), *opened])


def test_data_check_cli_exit_codes_follow_the_threshold(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = dataset / "manifest.jsonl"
    write_lines(manifest, LINES)
    bad_lines = {n for n, (_, reason, _) in enumerate(CASES, start=1) if reason is not None}

    assert main(["data", "check", "--manifest", str(manifest)]) == ExitCode.FAILED  # 18 of 23 bad: above 5 %
    out = capsys.readouterr().out
    assert f"{manifest}:6 [missing]: video:" in out and "check FAILED" in out
    quarantine = [json.loads(x) for x in (dataset / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(q["line"] for q in quarantine) == sorted(bad_lines)
    summary = json.loads((dataset / "summary.json").read_text())
    assert summary["kept"] == len(GOOD) and summary["passed"] is False

    clean = dataset / "clean.jsonl"
    args = ["data", "check", "--manifest", str(manifest), "--max-bad-fraction", "0.9", "--clean-manifest", str(clean)]
    assert main(args) == ExitCode.OK
    assert [json.loads(x)["clip_id"] for x in clean.read_text().splitlines()] == GOOD
    assert main(["data", "check", "--manifest", str(clean)]) == ExitCode.OK


def test_data_check_passes_below_default_threshold(dataset: Path) -> None:
    lines: list[dict[str, Any] | bytes] = [rec(f"c{i:02d}", video="media/av.mp4") for i in range(39)]
    write_lines(dataset / "manifest.jsonl", [*lines, rec("bad", video="media/garbage.mp4")])  # 1 / 40 = 2.5 %
    assert main(["data", "check", "--manifest", str(dataset / "manifest.jsonl")]) == ExitCode.OK
    assert main(["data", "check", "--manifest", str(dataset / "manifest.jsonl"), "--max-bad-fraction", "0.02"]) == 1
    assert len((dataset / "quarantine.jsonl").read_text().splitlines()) == 1


def test_data_check_usage_and_input_errors(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_lines(dataset / "manifest.jsonl", [rec("a", video="media/av.mp4")])
    assert main(["data", "check", "--manifest", str(dataset / "manifest.jsonl"), "--max-bad-fraction", "2"]) == 2
    assert "max_bad_fraction" in capsys.readouterr().err
    assert main(["data", "check", "--manifest", str(dataset / "nope.jsonl")]) == ExitCode.INPUT
    write_lines(dataset / "empty.jsonl", [])
    assert main(["data", "check", "--manifest", str(dataset / "empty.jsonl")]) == ExitCode.FAILED  # no records


def test_write_manifest_round_trips(tmp_path: Path) -> None:
    records = [parse_record(rec(f"r{i}", audio=f"a/{i}.wav", captions=["ü", "x"])) for i in range(3)]
    write_manifest(tmp_path / "m.jsonl", records)
    kept, problems = read_manifest(tmp_path / "m.jsonl")
    assert [k.record for k in kept] == records and not problems
    assert [k.line for k in kept] == [1, 2, 3]


def test_a_bare_clean_manifest_name_goes_next_to_the_manifest(
    dataset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 12 point 3: `--clean-manifest clean.jsonl` was taken relative to the working directory and refused."""
    manifest = dataset / "manifest.jsonl"
    write_lines(manifest, LINES)
    monkeypatch.chdir(tmp_path)  # somewhere else than the dataset
    args = ["data", "check", "--manifest", str(manifest), "--max-bad-fraction", "0.9"]
    assert main([*args, "--clean-manifest", "clean.jsonl"]) == ExitCode.OK
    assert f"clean manifest: {dataset / 'clean.jsonl'} ({len(GOOD)} records)" in capsys.readouterr().out
    assert [json.loads(x)["clip_id"] for x in (dataset / "clean.jsonl").read_text().splitlines()] == GOOD
    assert not (tmp_path / "clean.jsonl").exists()
    assert main([*args, "--clean-manifest", str(tmp_path / "elsewhere.jsonl")]) == ExitCode.USAGE
    assert "give a bare file name to put it there" in capsys.readouterr().out
    assert main([*args, "--clean-manifest", "manifest.jsonl"]) == ExitCode.USAGE
    assert "would overwrite the manifest it checks" in capsys.readouterr().out

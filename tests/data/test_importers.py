"""``avlops data import {valor,csv,folder}``: records through the schema, every bad entry reported with file:line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from avlops.cli import ExitCode, main
from avlops.data.importers import SourceError, clip_id_from, import_captions_csv, import_folder, import_valor
from avlops.data.importers.annotations import iter_json_array, iter_json_object, undecodable
from avlops.data.schema import CLIP_ID_PATTERN, Split

if TYPE_CHECKING:
    from conftest import SampleMedia


def manifest(root: Path, name: str = "manifest.jsonl") -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in (root / name).read_text(encoding="utf-8").splitlines()]
    return {r["clip_id"]: r for r in rows}


def quarantine(root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (root / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]


def problem_at(problems: list[dict[str, Any]], source: Path, line: int | None) -> str:
    """The reasons of the one quarantined entry from ``source:line``."""
    found = [p for p in problems if p["source"] == str(source) and p["line"] == line]
    assert len(found) == 1, f"{source}:{line} in {problems}"
    return "; ".join(found[0]["reasons"])


# ---------------------------------------------------------------------------------------------- annotation reading


def test_json_entries_know_their_line(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[\n  "v0",\n  "v1", "v2",\n\n  {"x": [1,\n 2]}, "v4"\n]\n', encoding="utf-8")
    assert list(iter_json_array(tmp_path / "a.json", "ids")) == [
        (2, "v0"),
        (3, "v1"),
        (3, "v2"),
        (5, {"x": [1, 2]}),
        (6, "v4"),
    ]
    (tmp_path / "o.json").write_bytes(b'\xef\xbb\xbf{"a": ["x"],\n"b":\n ["y"], "a": []}')  # BOM, duplicate key
    assert list(iter_json_object(tmp_path / "o.json", "map")) == [(1, "a", ["x"]), (2, "b", ["y"]), (3, "a", [])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', "a.json:1: not valid JSON for ids: expected ["),
        ('[\n"a",\n"b"\n"c"]', "a.json:4: not valid JSON for ids: expected , or ]"),
        ('["a",\n]', "a.json:2: not valid JSON: Expecting value"),
        ('["a"] x', "a.json:1: not valid JSON for ids: extra data"),
        ('["a"', "expected , or ], got the end of the file"),
    ],
)
def test_broken_json_names_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "a.json").write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=None) as info:
        list(iter_json_array(tmp_path / "a.json", "ids"))
    assert expected in str(info.value)


def test_undecodable_bytes_are_found_and_named() -> None:
    text = b"ok caf\xe9".decode("utf-8", errors="surrogateescape")
    assert undecodable(text) == "not valid UTF-8 (byte 0xe9)"
    assert undecodable({"k": ["fine", text]}) == "not valid UTF-8 (byte 0xe9)"
    assert undecodable(["fine", 3, {"é": "ü"}]) is None


def test_clip_id_from_paths_is_always_valid() -> None:
    assert clip_id_from("birds/Rain 2") == "birds__Rain_2"
    assert clip_id_from("héllo wörld") == "h_llo_w_rld"
    for stem in ["..hidden", ":x", "a" * 300, "", "x/../../y"]:
        assert CLIP_ID_PATTERN.fullmatch(clip_id_from(stem)), stem


# ------------------------------------------------------------------------------------------------------------- VALOR


@pytest.fixture
def valor_root(tmp_path: Path, sample_media: SampleMedia) -> Path:
    """An MSR-VTT-like layout: 4 train ids, 1 val, 2 test; videos in two containers, one separate wav."""
    root = tmp_path / "msrvtt"
    for vid, src, suffix in [
        ("video0", sample_media.video, ".mp4"),
        ("video1", sample_media.video, ".mkv"),
        ("video2", sample_media.mute_video, ".mp4"),
        ("video3", sample_media.video, ".mp4"),
        ("video4", sample_media.video, ".mp4"),
        ("video5", sample_media.video, ".mp4"),
        ("video6", sample_media.video, ".mp4"),
    ]:
        (root / "raw_videos").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "raw_videos" / f"{vid}{suffix}")
    (root / "audio_22050hz").mkdir()
    shutil.copy(sample_media.wav, root / "audio_22050hz/video2.wav")
    (root / "train_id.json").write_text('["video0", "video1", "video2", "video3"]', encoding="utf-8")
    (root / "val_id.json").write_text('["video4"]', encoding="utf-8")
    (root / "test_id.json").write_text('[\n  "video5",\n  "video6"\n]\n', encoding="utf-8")
    mapper = {f"video{i}": [f"clip {i} caption a", f"clip {i} caption b"] for i in range(7)}
    (root / "txt_mapper.json").write_text(json.dumps(mapper, indent=1), encoding="utf-8")
    return root


def valor_args(root: Path, *extra: str) -> list[str]:
    return [
        "data", "import", "valor", "--root", str(root),
        "--ids-train", "train_id.json", "--ids-val", "val_id.json", "--ids-test", "test_id.json",
        "--audio-dir", "audio_22050hz", *extra,
    ]  # fmt: skip


def test_valor_txt_mapper_import(valor_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json", "--audio-type", "mixed")) == ExitCode.OK
    got = manifest(valor_root)
    assert list(got) == [f"video{i}" for i in range(7)]
    assert got["video1"]["video"] == "raw_videos/video1.mkv"
    assert got["video2"] == {
        "clip_id": "video2",
        "video": "raw_videos/video2.mp4",
        "audio": "audio_22050hz/video2.wav",  # the mute video's sound comes from the wav
        "captions": ["clip 2 caption a", "clip 2 caption b"],
        "audio_type": "mixed",
        "split": "train",
        "source": "msrvtt",
    }
    assert "audio" not in got["video0"]
    assert [got[f"video{i}"]["split"] for i in range(7)] == ["train"] * 4 + ["val"] + ["test"] * 2
    assert quarantine(valor_root) == []
    assert "7 kept, 0 quarantined" in capsys.readouterr().out


def test_valor_caption_annotation_collects_captions_per_id(valor_root: Path) -> None:
    entries = [{"video_id": f"video{i}", "caption": f"caption {i}.{k}"} for k in range(3) for i in range(7)]
    (valor_root / "caption_annotation.json").write_text(json.dumps(entries, indent=2), encoding="utf-8")
    args = valor_args(valor_root, "--caption-annotation", str(valor_root / "caption_annotation.json"))
    assert main([*args, "--manifest", "msrvtt.jsonl", "--source", "msrvtt-1ka"]) == ExitCode.OK
    got = manifest(valor_root, "msrvtt.jsonl")
    assert got["video3"]["captions"] == ["caption 3.0", "caption 3.1", "caption 3.2"]
    assert {r["source"] for r in got.values()} == {"msrvtt-1ka"}


def test_valor_reports_every_bad_entry_with_file_and_line(valor_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids_train, ids_test = valor_root / "train_id.json", valor_root / "test_id.json"
    ids_train.write_text('[\n"video0",\n"video1",\n"video2",\n"video3",\n"ghost",\n7,\n"video0"\n]', encoding="utf-8")
    ids_test.write_text('[\n"video5",\n"video3",\n"video6"\n]', encoding="utf-8")
    (valor_root / "raw_videos/video6.mp4").unlink()
    mapper = valor_root / "txt_mapper.json"
    mapper.write_bytes(
        b'{\n"video0": ["a dog runs"],\n"video1": ["caf\xe9 noise"],\n"video2": [{"question": "q", "answer": "a"}],\n'
        b'"video3": ["fine"],\n"video4": ["val"],\n"video5": ["  "],\n"video6": ["no file"],\n"orphan": ["lost"]\n}'
    )
    report = import_valor(
        valor_root,
        {Split.TRAIN: ids_train, Split.VAL: valor_root / "val_id.json", Split.TEST: ids_test},
        txt_mapper=mapper,
        progress=False,
    )
    bad = {(p.source, p.line): "; ".join(p.reasons) for p in report.problems}
    assert bad[(str(ids_train), 3)] == f"{mapper}:3: not valid UTF-8 (byte 0xe9)"
    assert "question-answer pairs" in bad[(str(ids_train), 4)]
    assert "more than one split: train" in bad[(str(ids_train), 5)] and "more than one split" in bad[(str(ids_test), 3)]
    assert bad[(str(ids_train), 6)].startswith(f"no captions for this id in {mapper}; no video file raw_videos/ghost.")
    assert bad[(str(ids_train), 7)] == "entry 5: expected an id string, got int"
    assert "clip_id is already taken by" in bad[(str(ids_train), 8)]
    assert "no video file raw_videos/video6." in bad[(str(ids_test), 4)]
    assert bad[(str(mapper), 9)] == "captions for an id that is in no split list"
    assert bad[(str(ids_test), 2)] == "captions: caption 0 is empty or whitespace"  # the schema's own reason
    assert [e.record.clip_id for e in report.entries] == ["video0", "video4"]

    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json")) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert f"{ids_test}:2 [video5]: captions: caption 0 is empty or whitespace" in out
    assert f"{ids_train}:6 [ghost]: no captions" in out and "import FAILED" in out
    assert list(manifest(valor_root)) == ["video0", "video4"]
    assert len(quarantine(valor_root)) == len(report.problems) == 10
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json", "--max-bad-fraction", "1")) == ExitCode.OK


def test_valor_usage_and_input_errors(valor_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json", "--manifest", "../m.jsonl")) == 2
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json", "--max-bad-fraction", "2")) == 2
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json", "--video-dir", "..")) == 2
    assert main(valor_args(valor_root, "--txt-mapper", "missing.json")) == ExitCode.INPUT
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json", "--video-dir", "nope")) == ExitCode.INPUT
    assert main(valor_args(valor_root)) == 2  # one of --txt-mapper / --caption-annotation is required
    (valor_root / "txt_mapper.json").write_text('{"video0": ["a"],\n"video1" ["b"]}', encoding="utf-8")
    capsys.readouterr()
    assert main(valor_args(valor_root, "--txt-mapper", "txt_mapper.json")) == ExitCode.INPUT
    assert f"{valor_root / 'txt_mapper.json'}:2: not valid JSON" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------- CSV


@pytest.fixture
def audio_root(tmp_path: Path, sample_media: SampleMedia) -> Path:
    root = tmp_path / "audiocaps"
    for name in ["r1nicOVtvkQ", "-0xzrMun0Rs", "abc", "Rain drops", "Wind 2"]:
        (root / "audio").mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_media.wav, root / "audio" / f"{name}.wav")
    return root


def test_audiocaps_rows_of_one_file_are_one_clip(audio_root: Path) -> None:
    (audio_root / "val.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,r1nicOVtvkQ,130,A woman talks nearby as water pours\n"
        '2,-0xzrMun0Rs,30,"Birds chirp, then a dog barks"\n'
        "3,r1nicOVtvkQ,130,Water pours while a woman speaks\n",
        encoding="utf-8",
    )
    args = ["data", "import", "csv", "--root", str(audio_root), "--csv", "val.csv", "--split", "val"]
    assert main([*args, "--audio-type", "nonverbal"]) == ExitCode.OK
    got = manifest(audio_root)
    assert got["r1nicOVtvkQ"] == {
        "clip_id": "r1nicOVtvkQ",
        "audio": "audio/r1nicOVtvkQ.wav",
        "captions": ["A woman talks nearby as water pours", "Water pours while a woman speaks"],
        "audio_type": "nonverbal",
        "split": "val",
        "source": "audiocaps",
    }
    assert got["-0xzrMun0Rs"]["captions"] == ["Birds chirp, then a dog barks"]


def test_audiocaps_audio_pattern_by_audiocap_id(audio_root: Path) -> None:
    (audio_root / "audio/7.wav").write_bytes((audio_root / "audio/abc.wav").read_bytes())
    (audio_root / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n7,zzz,0,A bell rings\n", encoding="utf-8"
    )
    args = ["data", "import", "csv", "--root", str(audio_root), "--csv", "train.csv"]
    assert main([*args, "--audio-pattern", "{audiocap_id}.wav"]) == ExitCode.OK
    assert manifest(audio_root)["7"]["audio"] == "audio/7.wav"
    assert main([*args, "--audio-pattern", "{ytid}.wav"]) == 2


def test_clotho_five_captions_and_file_names_with_spaces(audio_root: Path) -> None:
    (audio_root / "clotho.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        'Rain drops.wav,"Rain falls on a roof, softly",Rain on tin,Drops fall,Water drips,A storm\n'
        "Wind 2.wav,a,b,c,d,e\n",
        encoding="utf-8",
    )
    result = import_captions_csv(audio_root, audio_root / "clotho.csv", split=Split.TEST, progress=False)
    assert not result.problems
    recs = {e.record.clip_id: e.record for e in result.entries}
    assert set(recs) == {"Rain_drops", "Wind_2"}
    assert recs["Rain_drops"].audio == "audio/Rain drops.wav"
    assert recs["Rain_drops"].captions[0] == "Rain falls on a roof, softly" and len(recs["Rain_drops"].captions) == 5
    assert recs["Wind_2"].video is None and recs["Wind_2"].source == "clotho"


def test_csv_bad_rows_are_reported_with_their_line(audio_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = audio_root / "train.csv"
    csv_path.write_bytes(
        b"audiocap_id,youtube_id,start_time,caption\n"
        b'1,abc,0,"A long caption\nthat spans two lines"\n'  # lines 2-3
        b"2,abc,0,too,many,columns\n"  # line 4
        b"3,abc,0,caf\xe9 latin-1\n"  # line 5
        b"\n"
        b"4,missing,0,No audio file for this one\n"  # line 7
        b"5,r1nicOVtvkQ,0,  \n"  # line 8: blank caption
    )
    code = main(["data", "import", "csv", "--root", str(audio_root), "--csv", str(csv_path)])
    assert code == ExitCode.FAILED
    problems = quarantine(audio_root)
    assert problem_at(problems, csv_path, 4) == "expected 4 columns, got 6"
    assert problem_at(problems, csv_path, 5) == "not valid UTF-8 (byte 0xe9)"
    assert "file not found" in problem_at(problems, csv_path, 7)
    assert "caption 0 is empty" in problem_at(problems, csv_path, 8)
    assert list(manifest(audio_root)) == ["abc"]
    assert f"{csv_path}:4: expected 4 columns" in capsys.readouterr().out


def test_csv_unknown_header_is_a_clear_input_error(audio_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (audio_root / "x.csv").write_text("id,text\n1,hello\n", encoding="utf-8")
    assert main(["data", "import", "csv", "--root", str(audio_root), "--csv", "x.csv"]) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "unknown CSV header 'id,text'" in err and "audiocap_id,youtube_id,start_time,caption" in err
    assert "file_name,caption_1" in err


# ------------------------------------------------------------------------------------------------------------ folder


@pytest.fixture
def folder_root(tmp_path: Path, sample_media: SampleMedia) -> Path:
    root = tmp_path / "mine"
    files = {
        "cats/cat01.mp4": sample_media.video,
        "cats/cat 02.MP4": sample_media.mute_video,
        "stills/dog.png": sample_media.image,
        "rain.wav": sample_media.wav,
        "talk.png": sample_media.image,
        "talk.wav": sample_media.wav,
    }
    for rel, src in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    for rel, text in {
        "cats/cat01.txt": "a cat jumps onto the sofa\n\n  a grey cat leaps  \n",
        "cats/cat 02.txt": "a quiet cat\r\n",
        "stills/dog.txt": "a dog sits",
        "rain.txt": "rain on a roof\n",
        "talk.txt": "a person talks over a still picture\n",
    }.items():
        (root / rel).write_text(text, encoding="utf-8")
    (root / ".cache").mkdir()
    (root / ".cache/hidden.mp4").write_bytes(b"never looked at")
    return root


def test_folder_import(folder_root: Path) -> None:
    assert main(["data", "import", "folder", "--root", str(folder_root), "--split", "val"]) == ExitCode.OK
    got = manifest(folder_root)
    assert sorted(got) == ["cats__cat01", "cats__cat_02", "rain", "stills__dog", "talk"]
    assert got["cats__cat01"]["captions"] == ["a cat jumps onto the sofa", "a grey cat leaps"]
    assert got["cats__cat_02"]["video"] == "cats/cat 02.MP4"
    assert got["rain"] == {
        "clip_id": "rain",
        "audio": "rain.wav",
        "captions": ["rain on a roof"],
        "audio_type": "unknown",
        "split": "val",
        "source": "mine",
    }
    assert (got["talk"]["video"], got["talk"]["audio"]) == ("talk.png", "talk.wav")
    assert got["stills__dog"]["video"] == "stills/dog.png"


def test_folder_reports_orphans_collisions_and_bad_text(folder_root: Path, sample_media: SampleMedia) -> None:
    shutil.copy(sample_media.video, folder_root / "cats/cat_02.mp4")  # same clip_id as "cat 02"
    (folder_root / "cats/cat_02.txt").write_text("another cat\n", encoding="utf-8")
    shutil.copy(sample_media.video, folder_root / "no_caption.mp4")
    (folder_root / "notes.txt").write_text("captions with no media\n", encoding="utf-8")
    (folder_root / "stills/dog.txt").write_bytes(b"a dog sits\n\na d\xf6g barks\n")
    result = import_folder(folder_root, progress=False)
    bad = {(p.source, p.line): "; ".join(p.reasons) for p in result.problems}
    assert bad == {
        (str(folder_root / "cats/cat_02.mp4"), None): "clip_id (from 'cats/cat_02') is already taken by "
        + str(folder_root / "cats/cat 02.MP4"),
        (str(folder_root / "no_caption.mp4"), None): "no caption file no_caption.txt beside it",
        (str(folder_root / "notes.txt"), None): bad[(str(folder_root / "notes.txt"), None)],
        (str(folder_root / "stills/dog.txt"), 3): "line 3: not valid UTF-8 (byte 0xf6)",
    }
    assert "caption file without a media file" in bad[(str(folder_root / "notes.txt"), None)]
    assert sorted(e.record.clip_id for e in result.entries) == ["cats__cat01", "cats__cat_02", "rain", "talk"]


# -------------------------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("fmt", ["valor", "csv", "folder"])
def test_every_importer_explains_its_layout(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "import", fmt, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"avlops data import {fmt} --root" in out and "quarantine.jsonl" in out


def test_an_empty_or_bad_caption_is_blamed_on_its_txt(folder_root: Path, sample_media: SampleMedia) -> None:
    """Issue 12 point 8: the importer blamed an empty caption on the .mp4 rather than its .txt."""
    shutil.copy(sample_media.video, folder_root / "blank.mp4")
    (folder_root / "blank.txt").write_text("\n  \n", encoding="utf-8")
    shutil.copy(sample_media.video, folder_root / "ctrl.mp4")
    (folder_root / "ctrl.txt").write_text("a bell\x07 rings\n", encoding="utf-8")
    result = import_folder(folder_root, progress=False)
    bad = {p.clip_id: (p.source, "; ".join(p.reasons)) for p in result.problems}
    assert bad["blank"] == (str(folder_root / "blank.txt"), "no caption: the file is empty or holds only blank lines")
    assert bad["ctrl"][0] == str(folder_root / "ctrl.txt") and "control characters" in bad["ctrl"][1]

"""Split assignment in the folder and CSV importers: split folders, a split file, a seeded ratio; no caption
(case/whitespace-insensitive) and no media file in two splits; counts reported (issue 12, point 2)."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from avlops.cli import ExitCode, main
from avlops.data.importers import import_folder
from avlops.data.importers.splits import SplitAssignment, SplitError, assign_splits, read_split_file
from avlops.data.schema import Split

if TYPE_CHECKING:
    from conftest import SampleMedia


def rows(root: Path) -> dict[str, dict[str, Any]]:
    return {r["clip_id"]: r for r in map(json.loads, (root / "manifest.jsonl").read_text().splitlines())}


def clip(root: Path, rel: str, media: Path, *captions: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(media, path)
    path.with_suffix(".txt").write_text("\n".join(captions) + "\n", encoding="utf-8")


def no_leaks(got: dict[str, dict[str, Any]]) -> None:
    """No caption text (normalised) and no media file in two splits."""
    where: dict[str, set[str]] = defaultdict(set)
    for r in got.values():
        for c in r["captions"]:
            where[" ".join(c.lower().split())].add(r["split"])
        for key in ("video", "audio"):
            if key in r:
                where[r[key]].add(r["split"])
    assert all(len(s) == 1 for s in where.values()), {k: v for k, v in where.items() if len(v) > 1}


def test_one_split_per_call_was_all_the_folder_importer_could_do(tmp_path: Path, sample_media: SampleMedia) -> None:
    """The reproduction: a folder with train/ and test/ subfolders came out all in one split."""
    clip(tmp_path, "train/a.wav", sample_media.wav, "rain on a roof")
    clip(tmp_path, "test/b.wav", sample_media.wav, "a dog barks")
    assert main(["data", "import", "folder", "--root", str(tmp_path)]) == ExitCode.OK
    assert {r["split"] for r in rows(tmp_path).values()} == {"train"}  # the default is unchanged ...
    assert main(["data", "import", "folder", "--root", str(tmp_path), "--split-folders"]) == ExitCode.OK
    assert {k: r["split"] for k, r in rows(tmp_path).items()} == {"train__a": "train", "test__b": "test"}  # ... now


def test_split_folders_move_a_shared_caption_into_the_held_out_split(
    tmp_path: Path, sample_media: SampleMedia, capsys: pytest.CaptureFixture[str]
) -> None:
    clip(tmp_path, "train/a.wav", sample_media.wav, "Rain on a   ROOF", "water drips")
    clip(tmp_path, "train/b.wav", sample_media.wav, "a bell rings")
    clip(tmp_path, "validation/c.wav", sample_media.wav, "wind blows")
    clip(tmp_path, "test/d.wav", sample_media.wav, "rain on a roof")
    clip(tmp_path, "misc/e.wav", sample_media.wav, "no split here")
    assert main(["data", "import", "folder", "--root", str(tmp_path), "--split-folders"]) == ExitCode.FAILED
    out = capsys.readouterr().out
    got = rows(tmp_path)
    assert {k: r["split"] for k, r in got.items()} == {
        "train__a": "test",  # shares "rain on a roof" with test/d
        "train__b": "train",
        "validation__c": "val",
        "test__d": "test",
    }
    assert "moved: train__a: train -> test (shares caption 'rain on a roof' with test clip test__d" in out
    assert "splits from split folders (train/, val/, test/): train 1, val 1, test 2 clips in 3 group(s)" in out
    assert "misc/e.wav" in out and "not under a split folder" in out  # named, then the 1-in-5 bad fraction fails
    no_leaks(got)


def test_split_file_by_clip_id_or_media_path(tmp_path: Path, sample_media: SampleMedia) -> None:
    for name in "abcd":
        clip(tmp_path, f"{name}.wav", sample_media.wav, f"sound {name}")
    (tmp_path / "splits.csv").write_text("name,split\na,train\nb.wav,val\n# a comment\nc,test\n")
    result = import_folder(tmp_path, progress=False)
    report = assign_splits(result, SplitAssignment(mode="file", file=tmp_path / "splits.csv"))
    assert {e.record.clip_id: e.record.split for e in result.entries} == {
        "a": Split.TRAIN,
        "b": Split.VAL,
        "c": Split.TEST,
    }
    assert report.counts == {"train": 1, "val": 1, "test": 1}
    assert [(p.clip_id, p.reasons) for p in result.problems] == [
        ("d", (f"not named in the split file {tmp_path / 'splits.csv'} (by clip_id or media path)",))
    ]
    (tmp_path / "s.json").write_text('{"a": "train", "b": "dev"}')
    with pytest.raises(SplitError, match=r"s\.json: 'b': unknown split 'dev'"):
        read_split_file(tmp_path / "s.json")
    (tmp_path / "s.txt").write_text("a train\nb\n")
    with pytest.raises(SplitError, match=r"s\.txt:2: expected 'name,split'"):
        read_split_file(tmp_path / "s.txt")


def test_ratio_is_seeded_keeps_groups_whole_and_reports_counts(
    tmp_path: Path, sample_media: SampleMedia, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(20):
        # pairs of clips share a caption (differently cased): each pair is one group
        clip(tmp_path, f"c{i:02d}.wav", sample_media.wav, f"Sound number {i // 2}", f"clip {i}")
    argv = ["data", "import", "folder", "--root", str(tmp_path), "--split-ratio", "0.6:0.2:0.2", "--seed", "3"]
    assert main(argv) == ExitCode.OK
    out = capsys.readouterr().out
    first = rows(tmp_path)
    counts = {s: sum(r["split"] == s for r in first.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 4, "test": 4}
    assert "splits by ratio 0.6:0.2:0.2 with seed 3: train 12, val 4, test 4 clips in 10 group(s)" in out
    no_leaks(first)
    assert main(argv) == ExitCode.OK and rows(tmp_path) == first  # the same seed, the same splits
    assert main([*argv[:-1], "4"]) == ExitCode.OK and rows(tmp_path) != first
    assert main([*argv[:5], "--split-ratio", "0.8:0.2"]) == ExitCode.USAGE
    assert "expected three numbers train:val:test" in capsys.readouterr().err


def test_csv_importer_assigns_splits_by_ratio(
    tmp_path: Path, write_wav: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5"]
    for i in range(10):
        write_wav(tmp_path / "audio" / f"s{i}.wav", seconds=0.3, freq=200 + 50 * i)
        same = "a door closes" if i < 3 else f"sound {i}"  # clips 0-2 share a caption: one group
        lines.append(f"s{i}.wav,{same},b{i},c{i},d{i},e{i}")
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    argv = ["data", "import", "csv", "--root", str(tmp_path), "--csv", "captions.csv", "--split-ratio", "5:2:3"]
    assert main(argv) == ExitCode.OK
    got = rows(tmp_path)
    assert len(got) == 10 and len({got[f"s{i}"]["split"] for i in range(3)}) == 1
    no_leaks(got)
    assert "clips in 8 group(s)" in capsys.readouterr().out


def test_shared_media_is_one_group(tmp_path: Path, sample_media: SampleMedia) -> None:
    from avlops.data.importers.result import ImportResult

    result = ImportResult()
    for i, split in enumerate(["train", "test"]):
        fields = {"clip_id": f"x{i}", "audio": "a.wav", "captions": [f"c{i}"], "split": split, "source": "t"}
        result.add(fields, "m", i)
    report = assign_splits(result, SplitAssignment(mode="ratio", seed=0))
    assert report.groups == 1 and len({e.record.split for e in result.entries}) == 1

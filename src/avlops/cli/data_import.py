"""``avlops data import {valor,csv,folder}``: turn a public dataset's annotations into a checked manifest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from avlops.cli import ExitCode, describe
from avlops.config import load_section, override
from avlops.data.importers import (
    QUARANTINE_NAME,
    ImportResult,
    SourceError,
    find_annotation,
    import_captions_csv,
    import_folder,
    import_valor,
    manifest_path,
    save_import,
)
from avlops.data.importers.splits import SplitAssignment, SplitError, read_split_file
from avlops.data.params import CheckConfig
from avlops.data.schema import AudioType, Split

__all__ = ["register"]

_OUTPUT = f"""
Writes <root>/manifest.jsonl (or --manifest NAME, a file directly in the root: media paths are relative to it) and
<root>/{QUARANTINE_NAME}, after checking every clip's media (present, decodable, inside the root). Every entry that
is not kept is printed with its file:line and reason. Exit codes: 0 ok; 1 more than --max-bad-fraction of the
entries are bad; 2 bad usage; 3 an annotation file is missing or unreadable.
"""

_VALOR = """Import a VALOR / MSR-VTT style dataset (the VALOR code's "Prepare Datasets" layout):

  datasets/msrvtt/                   --root
    raw_videos/video0.mp4            --video-dir: <id>.<mp4|mkv|webm|mov|m4v|avi|gif>
    audio_22050hz/video0.wav         --audio-dir (optional): <id>.wav; without one the video's own track is used
    1KAsplit_train_id.json           ["video0", "video1", ...]              --ids-train (and --ids-val, --ids-test)
    txt_mapper.json                  {"video0": ["a man is singing", ...]}  --txt-mapper
    caption_annotation.json          [{"video_id": "video0", "caption": "a man is singing"}, ...]
                                                                            or --caption-annotation

example:
  avlops data import valor --root datasets/msrvtt --ids-train 1KAsplit_train_id.json \\
      --ids-test 1KAsplit_test_id.json --txt-mapper txt_mapper.json --audio-dir audio_22050hz

JSON files are taken as given, or relative to --root; media folders are relative to --root. Ids with no captions
or no video, ids in two splits and captions of ids in no split are reported.
"""

_CSV = """Import an audio-caption CSV; the format is detected from the header:

  AudioCaps  audiocap_id,youtube_id,start_time,caption    one caption per row; rows naming one file are one clip
             91139,r1nicOVtvkQ,130,A woman talks nearby as water pours
  Clotho     file_name,caption_1,caption_2,caption_3,caption_4,caption_5
             Rain.wav,Rain falls,...

  datasets/audiocaps/        --root
    train.csv                --csv (as given, or relative to --root)
    audio/r1nicOVtvkQ.wav    --audio-dir / --audio-pattern (default {youtube_id}.wav, Clotho {file_name})

example:
  avlops data import csv --root datasets/audiocaps --csv train.csv --split train --audio-type nonverbal
  avlops data import csv --root datasets/clotho --csv captions.csv --split-ratio 0.8:0.1:0.1 --seed 0
  avlops data import csv --root datasets/audiocaps --csv val.csv --split val --audio-pattern "Y{youtube_id}.wav"

Clips are audio only. Rows with the wrong column count or bytes that are not UTF-8 are reported with their line.
"""

_FOLDER = """Import a plain folder: every media file with a same-named .txt caption file (one caption per
non-empty line) becomes a clip; the clip_id is its relative path without suffix ('/' -> '__').

  datasets/mine/             --root
    cats/cat01.mp4           video (with its own audio track)
    cats/cat01.txt           a cat jumps onto the sofa
                             a grey cat leaps
    rain.wav + rain.txt      audio only
    talk.png + talk.wav + talk.txt   still image with separate audio: one clip

example:
  avlops data import folder --root datasets/mine --split-folders        # mine/train/..., mine/val/..., mine/test/...
  avlops data import folder --root datasets/mine --split-ratio 0.8:0.1:0.1 --seed 0
  avlops data import folder --root datasets/mine --split-file splits.csv   # lines: clip_id or media path,split
  avlops data import folder --root datasets/mine --split train --audio-type mixed

Media: video .mp4 .mkv .webm .avi .mov .m4v .gif, images .jpg .jpeg .png .bmp .webp, audio .wav .flac .mp3 .m4a
.aac .ogg .opus. Media without a .txt, a .txt without media and colliding clip_ids are reported.
"""

_SPLITS = """
Splits (folder and csv): --split S puts every clip in S (default train); --split-folders takes it from a folder
named train/, val/ (or validation/) or test/ on the media path; --split-file F from a file of 'name,split' lines or a
JSON {name: split} (name: clip_id or media path relative to the root, with or without suffix); --split-ratio
T:V:E deals clips out by ratio with --seed. Clips that share a caption (case- and whitespace-insensitive) or a media
file are one group and never end up in two splits: dealt whole by ratio, or moved whole into the most held-out split
asked for (reported). The counts per split are printed.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, required=True, help="dataset root: the manifest and quarantine go here")
    p.add_argument("--manifest", default="manifest.jsonl", help="manifest file name in the root (manifest.jsonl)")
    p.add_argument(
        "--audio-type",
        choices=[t.value for t in AudioType],
        default="unknown",
        help="what the sound carries, for every clip (default unknown)",
    )
    p.add_argument("--source", help="the records' source name (default: per format)")
    p.add_argument("--max-bad-fraction", type=float, help="fail above this bad fraction (default: [check] or 0.05)")
    p.add_argument("--params", type=Path, help="params.yaml to read the [check] section from")
    p.add_argument("--no-decode", action="store_true", help="only open media, do not decode a frame")


def _splits(p: argparse.ArgumentParser) -> None:
    how = p.add_mutually_exclusive_group()
    how.add_argument("--split", choices=[s.value for s in Split], help="every clip in this split (default train)")
    how.add_argument("--split-folders", action="store_true", help="from train/ val/ test/ folders on the media path")
    how.add_argument("--split-file", type=Path, help="'name,split' lines or JSON {name: split} (as given, or in root)")
    how.add_argument("--split-ratio", metavar="T:V:E", help="deal clips out by ratio, e.g. 0.8:0.1:0.1")
    p.add_argument("--seed", type=int, default=0, help="seed of --split-ratio (0)")


def _assignment(args: argparse.Namespace) -> SplitAssignment:
    if args.split_folders:
        return SplitAssignment(mode="folders")
    if args.split_file is not None:
        path = args.split_file if args.split_file.is_file() else args.root / args.split_file
        return SplitAssignment(mode="file", file=path)
    if args.split_ratio is not None:
        return SplitAssignment.parse_ratio(args.split_ratio, seed=args.seed)
    return SplitAssignment(mode="fixed", split=Split(args.split or "train"))


def register(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``import`` with one subcommand per source format to ``avlops data``."""
    p = dsub.add_parser(
        "import", help="import VALOR JSON, AudioCaps/Clotho CSV or a folder", description=describe(__doc__)
    )
    isub = p.add_subparsers(dest="import_format", metavar="FORMAT", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    v = isub.add_parser("valor", help="VALOR / MSR-VTT id lists + captions", description=_VALOR, epilog=_OUTPUT)
    v.formatter_class = raw
    _common(v)
    v.add_argument("--ids-train", type=Path, required=True, help="JSON list of training ids")
    v.add_argument("--ids-val", type=Path, help="JSON list of validation ids")
    v.add_argument("--ids-test", type=Path, required=True, help="JSON list of test ids")
    captions = v.add_mutually_exclusive_group(required=True)
    captions.add_argument("--txt-mapper", type=Path, help='{"<id>": ["caption", ...]}')
    captions.add_argument("--caption-annotation", type=Path, help='[{"video_id": "<id>", "caption": "..."}]')
    v.add_argument("--video-dir", default="raw_videos", help="folder of <id>.<ext> videos in the root (raw_videos)")
    v.add_argument("--audio-dir", help="folder of <id>.wav files in the root (optional)")
    v.set_defaults(handler=run_valor, source="msrvtt")

    c = isub.add_parser("csv", help="AudioCaps or Clotho caption CSV", description=_CSV + _SPLITS, epilog=_OUTPUT)
    c.formatter_class = raw
    _common(c)
    c.add_argument("--csv", type=Path, required=True, help="the captions CSV")
    _splits(c)
    c.add_argument("--audio-dir", default="audio", help="folder of the audio files in the root (audio)")
    c.add_argument("--audio-pattern", help="audio file name from the row's {columns}")
    c.set_defaults(handler=run_csv)

    f = isub.add_parser(
        "folder", help="media files with same-named .txt captions", description=_FOLDER + _SPLITS, epilog=_OUTPUT
    )
    f.formatter_class = raw
    _common(f)
    _splits(f)
    f.set_defaults(handler=run_folder)


def run_valor(args: argparse.Namespace) -> int:
    def read() -> ImportResult:
        ids = {Split.TRAIN: args.ids_train, Split.VAL: args.ids_val, Split.TEST: args.ids_test}
        mapper, annotation = args.txt_mapper, args.caption_annotation
        return import_valor(
            args.root,
            {split: find_annotation(path, args.root) for split, path in ids.items() if path is not None},
            txt_mapper=find_annotation(mapper, args.root) if mapper else None,
            caption_annotation=find_annotation(annotation, args.root) if annotation else None,
            video_dir=args.video_dir,
            audio_dir=args.audio_dir,
            audio_type=AudioType(args.audio_type),
            source=args.source,
        )

    return _run(args, read)


def run_csv(args: argparse.Namespace) -> int:
    def read() -> ImportResult:
        return import_captions_csv(
            args.root,
            find_annotation(args.csv, args.root),
            split=Split.TRAIN,  # provisional: set by the split assignment
            audio_dir=args.audio_dir,
            audio_pattern=args.audio_pattern,
            audio_type=AudioType(args.audio_type),
            source=args.source,
        )

    return _run(args, read, splits=True)


def run_folder(args: argparse.Namespace) -> int:
    def read() -> ImportResult:
        return import_folder(args.root, split=Split.TRAIN, audio_type=AudioType(args.audio_type), source=args.source)

    return _run(args, read, splits=True)


def _run(args: argparse.Namespace, read: Callable[[], ImportResult], splits: bool = False) -> int:
    """Validate the options, import, assign splits, check and write; print every problem and the summary; apply
    the gate."""
    cfg = override(load_section(args.params, "check", CheckConfig), max_bad_fraction=args.max_bad_fraction)
    root: Path = args.root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found")
    manifest = manifest_path(root, args.manifest)
    try:
        assignment = _assignment(args) if splits else None
        if assignment is not None and assignment.mode == "file" and assignment.file is not None:
            read_split_file(assignment.file)  # a bad split file is refused before any media is read
        result = read()
    except SplitError as err:
        print(f"avlops: {err}", file=sys.stderr)
        return ExitCode.USAGE if "not found" not in str(err) else ExitCode.INPUT
    except SourceError as err:
        print(f"avlops: {err}", file=sys.stderr)
        return ExitCode.INPUT
    report, split_report = save_import(result, root, manifest, decode=not args.no_decode, splits=assignment)
    if split_report is not None:
        for moved in split_report.moved:
            print(f"moved: {moved}")
        print(split_report.summary())
    for p in report.problems:
        print(f"bad record: {p.format()}")
    summary = report.summary()
    print(
        f"{manifest}: {summary['kept']} kept, {summary['quarantined']} quarantined "
        f"({summary['bad_fraction']:.1%} bad, limit {cfg.max_bad_fraction:.1%}); "
        f"{summary['captions']} captions; splits {summary['by_split']}"
    )
    print(f"quarantine: {root / QUARANTINE_NAME}")
    if not report.passed(cfg.max_bad_fraction):
        print("import FAILED: " + ("no records" if report.total == 0 else "too many bad records"))
        return ExitCode.FAILED
    return ExitCode.OK

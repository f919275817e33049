"""``avlops data synth``: make the synthetic tri-modal corpus (see :mod:`avlops.data.synth`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import load_section, override
from avlops.data.params import SynthConfig
from avlops.data.synth import COLOURS, MOTIONS, PITCHES_HZ, SHAPES, SOUNDS, WORDS, generate_corpus

__all__ = ["register", "run_synth"]

DESCRIPTION = f"""\
Make a synthetic vision-audio-language corpus: short .mp4 clips (H.264 + AAC) of a coloured shape moving over a grey
background while a sound plays and/or a voice (espeak-ng) says a word, with 2-3 captions per clip that state every fact.

  seen    colour  {", ".join(COLOURS)}
          shape   {", ".join(SHAPES)}
          motion  {", ".join(MOTIONS)}
  heard   sound   {", ".join(SOUNDS)}
          pitch   {", ".join(f"{k} {v:g} Hz" for k, v in PITCHES_HZ.items())} (tones only)
          word    {", ".join(WORDS)} (espeak-ng)

Each fact is either seen or heard, so retrieval needs both. audio_type is verbal (word only), nonverbal (sound
only) or mixed (both). Ground truth goes into each record's attributes. Splits are assigned per fact combination
(clips with the same facts share captions), so no caption appears in two splits.

Writes OUT/clips/syn-NNNNNN.mp4 and OUT/manifest.jsonl. The new clips are built in a staging folder and swapped in, so a
re-run replaces the previous corpus cleanly and a failed run leaves it untouched. The same seed and settings give the
same manifest and byte-identical clips (with the same PyAV/FFmpeg build), whatever the number of workers.

Values come from the [synth] section of --params (see avlops.data.params.SynthConfig for every key: seconds, fps,
size, sample_rate, val_fraction, test_fraction, ...); the flags below override it."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``synth`` to the ``avlops data`` group."""
    p = sub.add_parser(
        "synth",
        help="make the synthetic tri-modal corpus (moving shapes, tones, noises, spoken words)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 2 bad flag or config, 3 a needed input or tool (espeak-ng) is missing.",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="dataset folder (default: [synth] out, data/synth)")
    p.add_argument("--clips", type=int, metavar="N", help="number of clips (default: [synth] clips, 200)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default: [synth] seed, 0)")
    p.add_argument("--params", type=Path, metavar="YAML", help="params.yaml to read the [synth] section from")
    p.add_argument(
        "--workers", type=int, metavar="W", help="worker processes; 0 = one per CPU core (default: [synth] workers, 0)"
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is hidden anyway when not on a terminal)"
    )
    p.set_defaults(handler=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    cfg = override(
        load_section(args.params, "synth", SynthConfig),
        out=str(args.out) if args.out else None,
        clips=args.clips,
        seed=args.seed,
        workers=args.workers,
    )
    s = generate_corpus(cfg, progress=not args.no_progress)
    print(f"{s.manifest}: {s.clips} clips ({s.groups} distinct fact combinations), seed {cfg.seed}")
    print(f"  splits:      {s.by_split}")
    print(f"  audio types: {s.by_audio_type}")
    print(f"  {s.seconds:.1f} s, {s.clips_per_s:.1f} clips/s with {s.workers} worker(s)")
    return ExitCode.OK

"""``avlops preprocess``: decode a manifest's clips into model-ready tensor shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import load_section, override
from avlops.preprocessing.params import PreprocessConfig, SamplingMode

__all__ = ["register", "run_preprocess"]

_DESCRIPTION = """\
Preprocess every clip of a manifest into safetensors shards: N video frames per clip (VALOR segment sampling,
shorter-side resize + centre crop, CLIP mean/std), A log-mel fbank slices (Kaldi fbank, 64 mel, 512-frame slices at
22050 Hz by default) and the CLIP BPE tokens of every caption.

--model NAME (tiny, small, base, a model YAML, or a checkpoint's model_config.json; or preprocess.model in --params)
prepares the data for that model: the frame side, fbank bins and length, sample rate and caption context come from
its config, so the shards fit it. Settings that contradict the model are refused, naming each one.

Train-split clips get random frame/slice picks seeded per clip (--seed), val/test clips the middle ones (--sampling
changes that).

Writes into --out: {split}-{k}.safetensors shards, index.json (written last; the shard list and config hash),
stats.parquet (one row per clip) and quarantine.jsonl (clips that could not be used, with reasons). A rerun with the
same config and inputs skips the shards already finished, so an interrupted run resumes where it stopped.
Values come from --params [preprocess] and the flags below override them.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "preprocess",
        help="decode a manifest into frame/fbank/token shards",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 1 no clip could be preprocessed, 2 bad usage or config, 3 missing manifest.",
    )
    p.add_argument("--manifest", type=Path, help="manifest JSONL; media paths are relative to its folder")
    p.add_argument("--out", type=Path, help="output folder for shards, index.json, stats.parquet, quarantine.jsonl")
    p.add_argument("--params", type=Path, help="params.yaml to read the [preprocess] section from")
    p.add_argument("--model", help="the model the data is for (tiny, small, base or a YAML): sets its input shapes")
    p.add_argument("--workers", type=int, help="worker processes (0 = one per CPU core, 1 = no subprocesses)")
    p.add_argument("--frames", type=int, help="frames per clip in training mode")
    p.add_argument("--eval-frames", type=int, help="frames per clip in evaluation mode")
    p.add_argument("--resolution", type=int, help="frame side in pixels after resize and centre crop")
    p.add_argument("--sample-rate", type=int, help="audio sample rate in Hz")
    p.add_argument("--audio-slices", type=int, help="fbank slices per clip in training mode")
    p.add_argument("--context-length", type=int, help="tokens per caption")
    p.add_argument("--shard-size", type=int, help="clips per shard")
    p.add_argument("--seed", type=int, help="seed of the per-clip random frame/slice picks")
    p.add_argument("--sampling", choices=[m.value for m in SamplingMode], help="which clips get random picks")
    p.add_argument("--dtype", choices=["float32", "float16"], help="storage dtype of frames and fbanks")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_preprocess)


def run_preprocess(args: argparse.Namespace) -> int:
    from avlops.preprocessing.run import preprocess_manifest  # torch, av: imported only when the command runs
    from avlops.training.params import fit_preprocess

    base = load_section(args.params, "preprocess", PreprocessConfig)
    flags = {
        "resolution": args.resolution,
        "sample_rate": args.sample_rate,
        "context_length": args.context_length,
    }
    cfg = override(
        base,
        manifest=str(args.manifest) if args.manifest else None,
        out=str(args.out) if args.out else None,
        workers=args.workers,
        frames=args.frames,
        eval_frames=args.eval_frames,
        audio_slices=args.audio_slices,
        shard_size=args.shard_size,
        seed=args.seed,
        sampling=args.sampling,
        dtype=args.dtype,
        **flags,
    )
    model = args.model or base.model
    if model is not None:  # the model fixes the input shapes; the settings the user gave must agree with it
        explicit = {k: getattr(base, k) for k in base.model_fields_set} | {k: v for k, v in flags.items() if v}
        cfg = fit_preprocess(cfg, model, explicit)
        print(
            f"preprocessing for model {model!r}: {cfg.resolution} px frames, {cfg.num_mel_bins}x{cfg.target_length} "
            f"fbank slices at {cfg.sample_rate} Hz, {cfg.context_length}-token captions"
        )
    out = Path(cfg.out)
    summary = preprocess_manifest(Path(cfg.manifest), out, cfg, progress=not args.no_progress)
    quarantine = out / "quarantine.jsonl"
    lines = quarantine.read_text(encoding="utf-8").splitlines() if quarantine.is_file() else []
    for line in lines[:20]:
        p = json.loads(line)
        where = f"{p['source']}:{p['line']}" if p.get("line") is not None else p["source"]
        who = f" [{p['clip_id']}]" if p.get("clip_id") else ""  # an unparsable line names no clip
        print(f"quarantined: {where}{who}: " + "; ".join(p["reasons"]))
    if len(lines) > 20:
        print(f"... and {len(lines) - 20} more in {quarantine}")
    print(
        f"{summary.clips} clips in {summary.shards} shards ({summary.by_split}); "
        f"{summary.clips_done} preprocessed now, {summary.clips_skipped} resumed from finished shards, "
        f"{summary.quarantined} quarantined, {summary.noted} with notes"
    )
    print(
        f"{summary.shards_written} planned shards processed now, {summary.shards_skipped} already finished; "
        f"{summary.clips_per_s:.1f} clips/s with {summary.workers} worker(s) in {summary.seconds:.1f} s"
    )
    print(f"index: {out / 'index.json'}  stats: {out / 'stats.parquet'}  quarantine: {quarantine}")
    return ExitCode.OK if summary.clips > 0 else ExitCode.FAILED

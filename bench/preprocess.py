"""Benchmark ``avlops preprocess``: clips/s with the worker pool against one process and against pure decoding.

    uv run python bench/preprocess.py [--clips 200] [--repeats 3] [--scenario synth synth-params web web-params]
                                      [--results bench/results]

Corpora (``--clips`` mp4s each): ``synth``, the project's own synthetic corpus from ``avlops data synth`` (64 px, 3 s,
8 fps, 16 kHz mono with tones and spoken words); ``web``, small web-like videos written here with PyAV (320×240, 5 s,
25 fps, 44.1 kHz stereo, H.264 + AAC). Scenarios: ``synth`` and ``web`` preprocess with the VALOR defaults of
``PreprocessConfig`` (224 px, 4 train / 8 eval frames, 22050 Hz, 2 × 512-frame fbank slices, 77 tokens, float32);
``synth-params`` and ``web-params`` with the project's ``params.yaml`` [preprocess] section (what ``dvc repro`` runs:
64 px, float16, 16 kHz).

Each scenario times, in alternation ``--repeats`` times (best run counts, which keeps a shared machine's noise out of
the ratios as far as possible):

- ``decode``: open each clip once and decode every video frame and every audio frame, nothing else: the ceiling
  (single-threaded decoders, as the pipeline runs them);
- ``preprocess``: :func:`preprocess_manifest` from an empty output folder;

each with one process and with one worker process per core, and measures before each repeat how many cores the
machine actually gave (other jobs share it). It also checks that single-process and pool outputs are byte-identical.
Writes ``preprocess.json`` (every number) and ``preprocess.md`` (tables plus the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from machine import effective_cores, machine_table, wait_for_quiet
from machine import machine as common_machine

from avlops.config import load_section
from avlops.data.manifest import read_manifest
from avlops.data.media import SoundTrack, open_media
from avlops.data.params import SynthConfig
from avlops.data.synth import generate_corpus
from avlops.preprocessing.audio import decode_audio, waveform_to_fbank
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.run import preprocess_manifest
from avlops.preprocessing.text import get_tokenizer, tokenize
from avlops.preprocessing.video import decode_frames

#: name → (width, height, seconds, fps, sample rate, channels)
_SYNTH = SynthConfig()
#: corpus name → (width, height, seconds, fps, sample rate, channels)
CORPORA: dict[str, tuple[int, int, float, int, int, int]] = {
    "synth": (_SYNTH.size, _SYNTH.size, _SYNTH.seconds, _SYNTH.fps, _SYNTH.sample_rate, 1),  # `avlops data synth`
    "web": (320, 240, 5.0, 25, 44100, 2),  # a small web video: 125 frames, stereo 44.1 kHz
}
PARAMS_YAML = Path(__file__).resolve().parent.parent / "params.yaml"
#: scenario → (corpus, preprocessing config: "valor" = PreprocessConfig defaults, "params" = params.yaml [preprocess])
SCENARIOS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "valor"),
    "synth-params": ("synth", "params"),
    "web": ("web", "valor"),
    "web-params": ("web", "params"),
}


def scenario_config(kind: str) -> PreprocessConfig:
    if kind == "params":
        return load_section(PARAMS_YAML, "preprocess", PreprocessConfig)
    return PreprocessConfig()


def write_clip(path: Path, spec: tuple[int, int, float, int, int, int], seed: int) -> None:
    """A moving gradient with a noisy tone, H.264 (ultrafast) + AAC."""
    w, h, seconds, fps, rate, channels = spec
    rng = np.random.default_rng(seed)
    n = round(seconds * fps)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        layout = "mono" if channels == 1 else "stereo"
        aud = c.add_stream("aac", rate=rate, layout=layout)
        for i in range(n):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, np.full_like(xx, 40 * seed % 256)], -1)
            for p in vs.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(round(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (220 + 20 * seed % 400) * t) + 0.05 * rng.standard_normal(t.size)
        wave = np.repeat(wave[None].astype(np.float32), channels, axis=0)  # [C, S]
        for k in range(0, wave.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k : k + 1024]), format="fltp", layout=layout)
            f.sample_rate, f.pts, f.time_base = rate, k, Fraction(1, rate)
            for p in aud.encode(f):
                c.mux(p)
        for p in aud.encode():
            c.mux(p)


def write_corpus(folder: Path, spec: tuple[int, int, float, int, int, int], clips: int) -> Path:
    """Gradient clips with a noisy tone, 80/10/10 train/val/test; returns the manifest."""
    folder.mkdir(parents=True)
    lines = []
    for i in range(clips):
        write_clip(folder / f"c{i:04d}.mp4", spec, i)
        split = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")  # 80/10/10 like the synth corpus
        rec = {"clip_id": f"c{i:04d}", "video": f"c{i:04d}.mp4", "captions": [f"clip {i} shows a moving gradient"]}
        lines.append(json.dumps(rec | {"split": split, "source": "bench", "audio_type": "nonverbal"}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def decode_all(path: str, ffmpeg_threads: bool = False) -> int:
    """Decode every video and audio frame of one clip, nothing else: the ceiling. One open and one demuxing pass
    over both streams, single-threaded decoders as :func:`avlops.data.media.open_media` sets them up for the
    pipeline; ``ffmpeg_threads`` gives the decoders FFmpeg's own thread pool instead (its default, one thread per
    core), recorded to show which is faster here. Returns the number of frames decoded."""
    with open_media(Path(path), "clip") as c:
        streams = [*c.streams.video[:1], *c.streams.audio[:1]]
        if ffmpeg_threads:
            for stream in streams:
                stream.codec_context.thread_count = 0  # FFmpeg's choice
        return sum(1 for _ in c.decode(*streams))


def decode_fbank_tokens(item: tuple[str, tuple[str, ...], PreprocessConfig]) -> int:
    """The ceiling plus the two library calls every clip needs whatever the implementation: the Kaldi fbank of its
    sound (mono at the configured rate, ``torchaudio.compliance.kaldi.fbank``) and the CLIP BPE tokens of its
    captions. Decoding is the pipeline's own single pass (one frame converted to RGB); no resizing, normalisation,
    slicing, serialisation or writing. Returns the frames decoded."""
    path, captions, cfg = Path(item[0]), item[1], item[2]
    sound = SoundTrack()
    with open_media(path, "clip") as c:
        _, _, info = decode_frames(path, 1, None, container=c, sound=sound)
        wave, rate = decode_audio(path, sound)
    waveform_to_fbank(wave, rate, cfg)
    tokenize(captions, cfg.context_length)
    return info.frame_count


def time_floor(items: list[tuple[str, tuple[str, ...], PreprocessConfig]], workers: int) -> float:
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init) as pool:
        list(pool.map(decode_fbank_tokens, items, chunksize=4))
    return time.perf_counter() - t0


def _init() -> None:
    torch.set_num_threads(1)


def time_decode(paths: list[str], workers: int, ffmpeg_threads: bool = False) -> float:
    t0 = time.perf_counter()
    if workers == 1:
        for p in paths:
            decode_all(p, ffmpeg_threads)
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init) as pool:
            list(pool.map(decode_all, paths, chunksize=4))
    return time.perf_counter() - t0


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(out.iterdir()):
        if f.is_file() and f.name != ".lock":  # the dataset's files: not the lock or the resume state
            h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def machine() -> dict[str, Any]:
    return common_machine(
        torch=torch.__version__,
        pyav=av.__version__,
        libavcodec=".".join(map(str, av.library_versions["libavcodec"])),
    )


def make_corpus(corpus: str, clips: int, tmp: Path) -> Path:
    """The corpus's manifest under ``tmp/corpus``, made on first use."""
    manifest = tmp / corpus / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    t0 = time.perf_counter()
    if corpus == "synth":
        generate_corpus(SynthConfig(out=str(tmp / corpus), clips=clips, workers=1), progress=False)
    else:
        write_corpus(tmp / corpus, CORPORA[corpus], clips)
    print(f"[{corpus}] wrote {clips} clips in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return manifest


def run_scenario(
    name: str, clips: int, repeats: int, workers: int, tmp: Path, min_cores: float, max_wait: float
) -> dict[str, Any]:
    corpus, config_kind = SCENARIOS[name]
    spec = CORPORA[corpus]
    base = scenario_config(config_kind)
    manifest = make_corpus(corpus, clips, tmp)
    paths = sorted(str(p) for p in manifest.parent.rglob("*.mp4"))
    entries, _ = read_manifest(manifest)
    items = [(str(manifest.parent / str(e.record.video)), tuple(e.record.captions), base) for e in entries]
    settings = {
        "decode_single": ("decode", 1),
        "decode_single_ffmpeg_threads": ("decode-threads", 1),
        "decode_pool": ("decode", workers),
        "decode_fbank_tokens_pool": ("floor", workers),
        "preprocess_single": ("preprocess", 1),
        "preprocess_pool": ("preprocess", workers),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in settings}
    digests: set[str] = set()
    cores: list[tuple[float, float]] = []  # effective cores (before, after) each repeat
    for rep in range(repeats):
        before = wait_for_quiet(min_cores, max_wait, f"[{name}] run {rep}", workers)
        print(f"[{name}] run {rep}: {before} effective cores", file=sys.stderr)
        for key, (kind, w) in settings.items():
            load = os.getloadavg()[0]
            if kind.startswith("decode"):
                seconds = time_decode(paths, w, ffmpeg_threads=kind == "decode-threads")
            elif kind == "floor":
                seconds = time_floor(items, w)
            else:
                out = tmp / f"{name}-out-{key}-{rep}"
                cfg = base.model_copy(update={"workers": w})
                s = preprocess_manifest(manifest, out, cfg, progress=False)
                seconds = s.seconds
                assert s.clips == clips and s.quarantined == 0, s
                digests.add(digest(out))
                out_bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
                shutil.rmtree(out)  # the next run starts with the same free memory and page cache (outputs are GBs)
            run = {"seconds": round(seconds, 3), "clips_per_s": round(clips / seconds, 2), "loadavg_1m_before": load}
            if kind == "preprocess":
                run["output_mb"] = round(out_bytes / 2**20, 1)
            runs[key].append(run)
            print(f"[{name}] {key:18s} run {rep}: {seconds:.2f} s, {clips / seconds:.1f} clips/s", file=sys.stderr)
        cores.append((before, effective_cores(workers)))
    # repeats with the machine to ourselves before and after count; when there is none, all of them do
    quiet = [i for i, (a, b) in enumerate(cores) if min(a, b) >= min_cores] or list(range(repeats))
    best = {k: min((v[i] for i in quiet), key=lambda r: r["seconds"]) for k, v in runs.items()}
    cps = {k: b["clips_per_s"] for k, b in best.items()}

    def paired(num: str, den: str) -> list[float]:
        """num/den clips/s within each counted repeat: they ran in the same repeat, under the same outside load."""
        return [round(runs[num][i]["clips_per_s"] / runs[den][i]["clips_per_s"], 3) for i in quiet]

    speedups = paired("preprocess_pool", "preprocess_single")
    ratios = paired("decode_pool", "preprocess_pool")
    return {
        "corpus": corpus,
        "config_source": "PreprocessConfig defaults (VALOR)" if config_kind == "valor" else "params.yaml [preprocess]",
        "config": base.model_dump(mode="json", exclude={"manifest", "out", "workers"}),
        "clip": dict(zip(("width", "height", "seconds", "fps", "sample_rate", "channels"), spec, strict=True)),
        "runs": runs,
        "best_clips_per_s": cps,
        "pool_speedup": round(cps["preprocess_pool"] / cps["preprocess_single"], 3),
        "decode_over_preprocess_pool": round(cps["decode_pool"] / cps["preprocess_pool"], 3),
        "decode_over_preprocess_single": round(cps["decode_single"] / cps["preprocess_single"], 3),
        "decode_over_decode_fbank_tokens_pool": round(cps["decode_pool"] / cps["decode_fbank_tokens_pool"], 3),
        "single_threaded_over_ffmpeg_threads_decode": round(
            cps["decode_single"] / cps["decode_single_ffmpeg_threads"], 3
        ),
        "pool_speedup_per_repeat": speedups,
        "pool_speedup_median": round(statistics.median(speedups), 3),
        "decode_over_preprocess_pool_per_repeat": ratios,
        "decode_over_preprocess_pool_median": round(statistics.median(ratios), 3),
        "byte_identical": len(digests) == 1,
        "output_mb": best["preprocess_single"].get("output_mb"),
        "effective_cores_per_repeat": [list(c) for c in cores],
        "counted_repeats": quiet,
    }


def describe(cfg: dict[str, Any]) -> str:
    frames = f"{cfg['frames']}/{cfg['eval_frames'] or cfg['frames']} frames"
    return f"{cfg['resolution']} px, {frames}, {cfg['sample_rate']} Hz, {cfg['dtype']}, {cfg['shard_size']}/shard"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Preprocessing throughput",
        "",
        f"Measured {result['measured_at']} with `uv run python bench/preprocess.py --clips {result['clips']} "
        f"--repeats {result['repeats']}`; best of {result['repeats']} alternating runs; pool = {result['workers']} "
        "worker processes. Configs: the VALOR defaults of `PreprocessConfig` (224 px, 4 train / 8 eval frames, "
        "22050 Hz, 2 × 512-frame fbank slices, 77 tokens, float32, 32 clips per shard), and for `synth-params` and "
        "`web-params` the project's own `params.yaml` [preprocess] section (what `dvc repro` runs).",
        "",
        "| scenario | clip | config | decode 1 proc | decode pool | preprocess 1 proc | preprocess pool "
        "| pool speed-up (best / median) "
        "| decode ÷ preprocess, pool (best / median) | decode ÷ (decode + fbank + tokens), pool "
        "| targets met (≥ 1.7× / ≤ 2×) | output | repeats counted: effective cores before–after |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, r in result["scenarios"].items():
        c, cps = r["clip"], r["best_clips_per_s"]
        lines.append(
            f"| {name} | {c['width']}×{c['height']}, {c['seconds']:g} s, {c['fps']} fps, {c['sample_rate']} Hz "
            f"{'mono' if c['channels'] == 1 else 'stereo'} | {describe(r['config'])} "
            f"| {cps['decode_single']:.1f} | {cps['decode_pool']:.1f} "
            f"| {cps['preprocess_single']:.1f} | {cps['preprocess_pool']:.1f} "
            f"| **{r['pool_speedup']:.2f}×** / {r['pool_speedup_median']:.2f}× "
            f"| **{r['decode_over_preprocess_pool']:.2f}×** / {r['decode_over_preprocess_pool_median']:.2f}× "
            f"| {r['decode_over_decode_fbank_tokens_pool']:.2f}× "
            f"| {'yes' if r['pool_speedup'] >= 1.7 else 'no'} / "
            f"{'yes' if r['decode_over_preprocess_pool'] <= 2.0 else 'no'} "
            f"| {r['output_mb']} MB | {len(r['counted_repeats'])} of {len(r['effective_cores_per_repeat'])}: "
            + ", ".join(f"{a}–{b}" for a, b in r["effective_cores_per_repeat"])
            + " |"
        )
    lines += [
        "",
        "Numbers are clips/s, best of the counted repeats per setting. Targets: pool ≥ 1.7× single process on 2 cores; "
        "preprocessing within 2× of pure decoding (decode ÷ preprocess ≤ 2, same number of processes). *Median*: the "
        "median over repeats of the ratio between the two runs of the same repeat (they ran back to back, so it is "
        "less sensitive to other jobs than a ratio of bests). *decode + fbank + tokens*: the ceiling plus only the two "
        "library calls every clip needs however it is implemented (the Kaldi fbank of its sound at the configured "
        "rate through `torchaudio.compliance.kaldi.fbank`, open_clip's BPE tokens of its captions), decoding through "
        "the pipeline's own pass (one frame converted to RGB): no resizing, normalisation, slicing, serialisation or "
        "writing; its ratio to decoding is a floor "
        "under decode ÷ preprocess. *Effective cores*: CPU work that "
        f"{result['workers']} busy-loop processes got, over what one got alone, measured before and after each repeat "
        f"({result['workers']}.0 = the machine was ours; lower = other jobs took CPU). A repeat counts when both "
        f"probes reach {result['min_cores']} (all repeats count when none does); the bench waits up to "
        f"{result['max_wait_s']:.0f} s for such a moment before each repeat.",
        "",
        "- Decoders run single-threaded in the pipeline and in the ceiling (one worker process per core is the "
        "parallelism). FFmpeg's own decoder thread pool, one process, decodes at "
        + ", ".join(
            f"{name} {r['best_clips_per_s']['decode_single_ffmpeg_threads']:.1f} clips/s "
            f"({1 / r['single_threaded_over_ffmpeg_threads_decode']:.2f}× single-threaded)"
            for name, r in result["scenarios"].items()
        )
        + ".",
        f"- Single-process and pool outputs byte-identical: "
        f"**{'yes' if all(r['byte_identical'] for r in result['scenarios'].values()) else 'NO'}**.",
        f"- 1-minute load average before the first run: {result['loadavg_1m_before_first_run']} on "
        f"{m['usable_cores']} cores (the machine is shared; a load above the core count means other jobs ran). "
        "Each run's load is in the JSON.",
        "",
        *machine_table(m),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="pool size; 0 = one per usable core")
    parser.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--min-cores", type=float, default=1.8, help="effective cores a repeat needs to count")
    parser.add_argument("--max-wait", type=float, default=300, help="seconds to wait for them before each repeat")
    args = parser.parse_args(argv)
    workers = args.workers or len(os.sched_getaffinity(0))
    get_tokenizer(77)  # import open_clip once, outside the timings (forked workers inherit it)
    first_load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="avlops-bench-preprocess-") as tmp:
        scenarios = {
            s: run_scenario(s, args.clips, args.repeats, workers, Path(tmp), args.min_cores, args.max_wait)
            for s in args.scenario
        }
    result = {
        "benchmark": "avlops preprocess",
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "clips": args.clips,
        "repeats": args.repeats,
        "workers": workers,
        "min_cores": args.min_cores,
        "max_wait_s": args.max_wait,
        "scenarios": scenarios,
        "loadavg_1m_before_first_run": first_load,
        "machine": machine(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "preprocess.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.results / "preprocess.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark ``avlops preprocess``: clips/s with the worker pool against one process and against pure decoding.

    uv run python bench/preprocess.py [--clips 100] [--repeats 2] [--scenario synth web] [--results bench/results]

For each scenario the bench writes ``--clips`` mp4s itself with PyAV (H.264 + AAC), then times, in alternation
``--repeats`` times (best run counts, which keeps a shared machine's noise out of the ratios as far as possible):

- ``decode``: open each clip and decode every video frame and every audio frame, nothing else: the ceiling;
- ``preprocess``: :func:`preprocess_manifest` with the VALOR defaults (224 px, 4 train / 8 eval frames, 22050 Hz,
  2 fbank slices of 512 frames, 77 tokens, float32 shards), from an empty output folder;

each with one process and with one worker process per core. It also checks that the single-process and pool outputs
are byte-identical. Writes ``preprocess.json`` (every number) and ``preprocess.md`` (tables plus the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import platform
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

import avlops
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.pipeline import preprocess_manifest
from avlops.preprocessing.text import get_tokenizer

#: name → (width, height, seconds, fps, sample rate, channels)
SCENARIOS: dict[str, tuple[int, int, float, int, int, int]] = {
    "synth": (64, 64, 3.0, 8, 16000, 1),  # like the synthetic corpus (`avlops data synth` defaults)
    "web": (320, 240, 5.0, 25, 44100, 2),  # a small web video: 125 frames, stereo 44.1 kHz
}


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


def decode_all(path: str) -> int:
    """Decode every video and audio frame of one clip; no conversion. Returns the number of frames decoded."""
    n = 0
    with av.open(path) as c:
        for _ in c.decode(video=0):
            n += 1
    with av.open(path) as c:
        for _ in c.decode(audio=0):
            n += 1
    return n


def _init() -> None:
    torch.set_num_threads(1)


def time_decode(paths: list[str], workers: int) -> float:
    t0 = time.perf_counter()
    if workers == 1:
        for p in paths:
            decode_all(p)
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init) as pool:
            list(pool.map(decode_all, paths, chunksize=4))
    return time.perf_counter() - t0


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(out.iterdir()):
        if f.name != ".lock":
            h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    mem_kb = next(
        (int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")), 0
    )
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "avlops": avlops.__version__,
        "torch": torch.__version__,
        "pyav": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
    }


def run_scenario(name: str, clips: int, repeats: int, workers: int, tmp: Path) -> dict[str, Any]:
    spec = SCENARIOS[name]
    t0 = time.perf_counter()
    manifest = write_corpus(tmp / name, spec, clips)
    print(f"[{name}] wrote {clips} clips in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    paths = sorted(str(p) for p in (tmp / name).glob("*.mp4"))
    settings = {
        "decode_single": ("decode", 1),
        "decode_pool": ("decode", workers),
        "preprocess_single": ("preprocess", 1),
        "preprocess_pool": ("preprocess", workers),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in settings}
    digests: set[str] = set()
    for rep in range(repeats):
        for key, (kind, w) in settings.items():
            load = os.getloadavg()[0]
            if kind == "decode":
                seconds = time_decode(paths, w)
            else:
                out = tmp / f"{name}-out-{key}-{rep}"
                cfg = PreprocessConfig(workers=w)
                s = preprocess_manifest(manifest, out, cfg, progress=False)
                seconds = s.seconds
                assert s.clips == clips and s.quarantined == 0, s
                digests.add(digest(out))
                out_bytes = sum(f.stat().st_size for f in out.iterdir())
            run = {"seconds": round(seconds, 3), "clips_per_s": round(clips / seconds, 2), "loadavg_1m_before": load}
            if kind == "preprocess":
                run["output_mb"] = round(out_bytes / 2**20, 1)
            runs[key].append(run)
            print(f"[{name}] {key:18s} run {rep}: {seconds:.2f} s, {clips / seconds:.1f} clips/s", file=sys.stderr)
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    cps = {k: b["clips_per_s"] for k, b in best.items()}
    return {
        "clip": dict(zip(("width", "height", "seconds", "fps", "sample_rate", "channels"), spec, strict=True)),
        "runs": runs,
        "best_clips_per_s": cps,
        "pool_speedup": round(cps["preprocess_pool"] / cps["preprocess_single"], 3),
        "decode_over_preprocess_pool": round(cps["decode_pool"] / cps["preprocess_pool"], 3),
        "decode_over_preprocess_single": round(cps["decode_single"] / cps["preprocess_single"], 3),
        "byte_identical": len(digests) == 1,
        "output_mb": best["preprocess_single"].get("output_mb"),
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Preprocessing throughput",
        "",
        f"Measured {result['measured_at']} with `uv run python bench/preprocess.py --clips {result['clips']} "
        f"--repeats {result['repeats']}`; best of {result['repeats']} alternating runs; pool = {result['workers']} "
        "worker processes. Config: the VALOR defaults of `PreprocessConfig` (224 px, 4 train / 8 eval frames, "
        "22050 Hz, 2 × 512-frame fbank slices, 77 tokens, float32 shards); splits 80/10/10.",
        "",
        "| scenario | clip | decode 1 proc | decode pool | preprocess 1 proc | preprocess pool | pool speed-up "
        "| decode ÷ preprocess (pool) | output |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["scenarios"].items():
        c, cps = r["clip"], r["best_clips_per_s"]
        lines.append(
            f"| {name} | {c['width']}×{c['height']}, {c['seconds']:g} s, {c['fps']} fps, {c['sample_rate']} Hz "
            f"{'mono' if c['channels'] == 1 else 'stereo'} | {cps['decode_single']:.1f} | {cps['decode_pool']:.1f} "
            f"| {cps['preprocess_single']:.1f} | {cps['preprocess_pool']:.1f} | **{r['pool_speedup']:.2f}×** "
            f"| **{r['decode_over_preprocess_pool']:.2f}×** | {r['output_mb']} MB |"
        )
    lines += [
        "",
        "Numbers are clips/s. Targets: pool ≥ 1.7× single process on 2 cores; preprocessing within 2× of pure "
        "decoding (decode ÷ preprocess ≤ 2, same number of processes).",
        "",
        f"- Single-process and pool outputs byte-identical: "
        f"**{'yes' if all(r['byte_identical'] for r in result['scenarios'].values()) else 'NO'}**.",
        f"- 1-minute load average before the first run: {result['loadavg_1m_before_first_run']} on "
        f"{m['usable_cores']} cores (the machine is shared; a load above the core count means other jobs ran). "
        "Each run's load is in the JSON.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in m.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="pool size; 0 = one per usable core")
    parser.add_argument("--scenario", nargs="+", choices=sorted(SCENARIOS), default=["synth", "web"])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    workers = args.workers or len(os.sched_getaffinity(0))
    get_tokenizer(77)  # import open_clip once, outside the timings (forked workers inherit it)
    first_load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="avlops-bench-preprocess-") as tmp:
        scenarios = {s: run_scenario(s, args.clips, args.repeats, workers, Path(tmp)) for s in args.scenario}
    result = {
        "benchmark": "avlops preprocess",
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "clips": args.clips,
        "repeats": args.repeats,
        "workers": workers,
        "config": PreprocessConfig().model_dump(mode="json", exclude={"manifest", "out", "workers"}),
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

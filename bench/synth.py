"""Benchmark the synthetic corpus generator: clips/s with the worker pool against one process, same invocation.

    uv run python bench/synth.py [--clips 200] [--repeats 2] [--results bench/results]

Writes ``synth.json`` (every number) and ``synth.md`` (a table plus the machine) under ``--results``. Each setting runs
``--repeats`` times in alternation (single, pool, single, pool, ...) and the best run counts, which keeps noise from
other processes on a shared machine out of the ratio as far as possible. It also checks that every run produced the
same bytes (manifest and every clip), whatever the number of workers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
from machine import machine as common_machine
from machine import machine_table

from avlops.data.params import SynthConfig
from avlops.data.synth import X264_OPTIONS, generate_corpus

SETTINGS = {"single": 1, "pool": 0}  # name -> SynthConfig.workers (0 = one per core)


def corpus_digest(folder: Path) -> str:
    """One SHA-256 over the manifest and every clip, in name order."""
    h = hashlib.sha256()
    for f in [folder / "manifest.jsonl", *sorted((folder / "clips").iterdir())]:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def espeak_version() -> str:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "not installed"
    match = re.search(r"\d+(\.\d+)+", out)  # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return match.group(0) if match else out.strip()


def machine() -> dict[str, Any]:
    return common_machine(
        pyav=av.__version__,
        libavcodec=".".join(map(str, av.library_versions["libavcodec"])),
        numpy=np.__version__,
        espeak_ng=espeak_version(),
        x264_options=X264_OPTIONS,
    )


def run_once(cfg: SynthConfig) -> dict[str, Any]:
    load = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    s = generate_corpus(cfg, progress=False)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": round(s.seconds, 3),
        "clips_per_s": round(s.clips_per_s, 2),
        "workers": s.workers,
        # CPU of this process only: pool workers are children of the forkserver and not counted here
        "main_process_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
        "loadavg_1m_before": round(load, 2),
        "digest": corpus_digest(Path(cfg.out)),
        "by_audio_type": s.by_audio_type,
        "by_split": s.by_split,
    }


def markdown(result: dict[str, Any]) -> str:
    m, cfg = result["machine"], result["config"]
    rows = [
        "| setting | workers | best s | best clips/s | median clips/s | all runs (s) | speed-up vs single (best) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, r in result["settings"].items():
        runs = ", ".join(f"{x['seconds']:.2f}" for x in r["runs"])
        rows.append(
            f"| {name} | {r['workers']} | {r['best_seconds']:.2f} | {r['best_clips_per_s']:.1f} "
            f"| {r['median_clips_per_s']:.1f} | {runs} "
            f"| {r['best_clips_per_s'] / result['settings']['single']['best_clips_per_s']:.2f}x |"
        )
    same = "yes" if result["byte_identical"] else "NO"
    single_cpu = min(x["main_process_cpu_s"] for x in result["settings"]["single"]["runs"])
    return "\n".join(
        [
            "# Synthetic corpus generator: throughput",
            "",
            f"Measured {result['measured_at']} with `uv run python bench/synth.py --clips {cfg['clips']} "
            f"--repeats {result['repeats']}`.",
            f"Corpus: {cfg['clips']} clips of {cfg['seconds']:g} s, {cfg['size']} px, {cfg['fps']} fps, "
            f"{cfg['sample_rate']} Hz mono (H.264 + AAC via PyAV), seed {cfg['seed']}.",
            "",
            *rows,
            "",
            f"- Pool vs single: **{result['pool_speedup']:.2f}x** (best runs), "
            f"{result['pool_speedup_median']:.2f}x (medians).",
            f"- CPU per clip in one process (render + encode + manifest): {1000 * single_cpu / cfg['clips']:.1f} ms.",
            f"- 1-minute load average before the runs: {result['loadavg_1m_before_first_run']} on "
            f"{m['usable_cores']} cores (the machine is shared; a load above the core count means other jobs ran).",
            f"- Byte-identical output across all runs and worker counts: **{same}** "
            f"(corpus digest `{result['digests'][0][:16]}`).",
            "",
            *machine_table(m),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    settings: dict[str, dict[str, Any]] = {name: {"runs": []} for name in SETTINGS}
    first_load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="avlops-bench-synth-") as tmp:
        for rep in range(args.repeats):
            for name, workers in SETTINGS.items():
                cfg = SynthConfig.model_validate(
                    {"out": f"{tmp}/{name}-{rep}", "clips": args.clips, "seed": args.seed, "workers": workers}
                )
                run = run_once(cfg)
                settings[name]["runs"].append(run)
                print(f"{name:6s} run {rep}: {run['seconds']:.2f} s, {run['clips_per_s']:.1f} clips/s", file=sys.stderr)
    for r in settings.values():
        best = min(r["runs"], key=lambda x: x["seconds"])
        r |= {
            "workers": best["workers"],
            "best_seconds": best["seconds"],
            "best_clips_per_s": best["clips_per_s"],
            "median_clips_per_s": round(statistics.median(x["clips_per_s"] for x in r["runs"]), 2),
        }
    digests = sorted({run["digest"] for r in settings.values() for run in r["runs"]})
    cfg = SynthConfig.model_validate({"clips": args.clips, "seed": args.seed})
    result = {
        "benchmark": "avlops data synth",
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "config": cfg.model_dump(exclude={"out", "workers"}),
        "repeats": args.repeats,
        "settings": settings,
        "pool_speedup": round(settings["pool"]["best_clips_per_s"] / settings["single"]["best_clips_per_s"], 3),
        "pool_speedup_median": round(
            settings["pool"]["median_clips_per_s"] / settings["single"]["median_clips_per_s"], 3
        ),
        "byte_identical": len(digests) == 1,
        "digests": digests,
        "loadavg_1m_before_first_run": first_load,
        "machine": machine(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "synth.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.results / "synth.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

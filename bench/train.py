"""Benchmark ``avlops train`` on CPU: samples/s through the shard loader against the same steps fed from memory.

    uv run python bench/train.py [--clips 96] [--repeats 3] [--models tiny small] [--results bench/results]

Data: the project's synthetic corpus (``avlops data synth``), preprocessed with the real pipeline into float16 shards
that fit each model: ``tiny`` 32 px, 4 frames, one 64x128 fbank slice, 16 tokens; ``small`` the ``params.yaml``
[preprocess] section (64 px, 4 frames, one 64x512 slice of 16 kHz audio, 77 tokens). Model and objective come from
``configs/train/<model>.yaml`` (VALOR's MGA over tv/ta/tav with fine similarity + masked-LM captions, AdamW).

Settings, run in alternation ``--repeats`` times in one process (best run counts; the machine is shared):

- ``loader-w0``: :func:`avlops.training.loop.train`, the DataLoader reading shards in the training process;
- ``loader-w2``: the same with 2 loader worker processes (on a 2-core machine they compete with the step for cores);
- ``memory``: :class:`avlops.training.loop.Trainer` stepping through batches already collated, cast and held in
  memory: no loader, no shard reads. The ceiling a loader can reach.

samples/s and the data-wait share (time blocked on the next batch / step time) exclude each run's first step
(allocations, worker start-up) and checkpoint writes. Writes ``train.json`` (every number) and ``train.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from machine import machine as common_machine
from machine import machine_table

from avlops.config import load_section, override
from avlops.data.params import SynthConfig
from avlops.data.synth import generate_corpus
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.run import preprocess_manifest
from avlops.training.data import GlobalBatchSampler, ShardDataset, collate, to_batch
from avlops.training.distributed import DistEnv
from avlops.training.loop import Trainer, train
from avlops.training.params import TrainConfig, resolve

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("loader-w0", "loader-w2", "memory")
#: model -> (steps per run, global batch)
RUNS = {"tiny": (40, 16), "small": (20, 16)}


def preprocess_config(model: str) -> PreprocessConfig:
    if model == "small":
        return override(load_section(ROOT / "params.yaml", "preprocess", PreprocessConfig), workers=1, shard_size=32)
    return PreprocessConfig(
        frames=4,
        eval_frames=4,
        resolution=32,
        sample_rate=16000,
        target_length=128,
        audio_slices=1,
        context_length=16,
        dtype="float16",
        shard_size=32,
        workers=1,
    )


def train_config(model: str, workers: int) -> TrainConfig:
    steps, batch = RUNS[model]
    cfg = load_section(ROOT / "configs" / "train" / f"{model}.yaml", None, TrainConfig)
    data = {**cfg.model_dump(), "steps": steps, "epochs": None, "batch_size": batch, "num_workers": workers}
    data |= {"checkpoint_every": 10**6, "keep_last": 1, "metrics": {"log_every": 1}}
    return TrainConfig.model_validate(data)


def summarize(step_s: list[float], wait_s: list[float], losses: list[float], batch: int) -> dict[str, Any]:
    """Throughput over the steps after the first (sum of their times), per median step, data-wait share, mean loss."""
    busy = sum(step_s[1:])
    return {
        "samples_per_s": (len(step_s) - 1) * batch / busy,
        "median_step_samples_per_s": batch / statistics.median(step_s[1:]),
        "data_wait_share": sum(wait_s[1:]) / busy,
        "loss": sum(losses) / len(losses),
    }


def run_loader(model: str, data: Path, workers: int, tmp: Path) -> dict[str, Any]:
    """:func:`train` as the CLI runs it; per-step times from its metrics.jsonl (one line per step)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    cfg = train_config(model, workers)
    train(cfg, data, out, progress=False)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step_s = [cfg.batch_size / e["samples_per_s"] for e in log]
    wait_s = [t * e["data_wait_share"] for t, e in zip(step_s, log, strict=True)]
    return summarize(step_s, wait_s, [e["loss"]["total"] for e in log], cfg.batch_size)


def run_memory(model: str, data: Path) -> dict[str, Any]:
    """The same steps from batches held in memory (collated and cast to float32 up front)."""
    resolved = resolve(train_config(model, 0))
    cfg = resolved.cfg
    steps = cfg.steps or 0
    ds = ShardDataset(data, resolved.model, split=cfg.split, seed=cfg.seed)
    sampler = GlobalBatchSampler(len(ds), cfg.batch_size, seed=cfg.seed)
    env = DistEnv()
    batches = [to_batch(collate([ds[k] for k in sampler.global_batch(s)]), env.device) for s in range(steps)]
    trainer = Trainer(resolved, env, steps)
    step_s, losses = [], []
    for s, batch in enumerate(batches):
        t0 = time.perf_counter()
        terms, _ = trainer.step(batch, s)
        step_s.append(time.perf_counter() - t0)
        losses.append(terms["total"])
    return summarize(step_s, [0.0] * steps, losses, cfg.batch_size)


def machine() -> dict[str, Any]:
    return common_machine(
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )


def params_count(model: str) -> int:
    from avlops.models.vla import VLAModel

    return sum(p.numel() for p in VLAModel(resolve(train_config(model, 0)).model).parameters())


def bench_model(model: str, manifest: Path, repeats: int, tmp: Path) -> dict[str, Any]:
    data = tmp / f"pre-{model}"
    t0 = time.perf_counter()
    summary = preprocess_manifest(manifest, data, preprocess_config(model), progress=False)
    print(f"[{model}] preprocessed {summary.by_split} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    for rep in range(repeats):
        for setting in SETTINGS[rep % 3 :] + SETTINGS[: rep % 3]:  # rotate the order: no setting always runs first
            load = os.getloadavg()[0]
            r = run_memory(model, data) if setting == "memory" else run_loader(model, data, int(setting[-1]), tmp)
            r["loadavg_1m_before"] = round(load, 2)
            runs[setting].append(r)
            print(
                f"[{model}] {setting} #{rep + 1}: {r['samples_per_s']:.1f} samples/s "
                f"(median step {r['median_step_samples_per_s']:.1f}), {100 * r['data_wait_share']:.1f} % waiting",
                file=sys.stderr,
            )
    steps, batch = RUNS[model]
    out: dict[str, Any] = {
        "steps_per_run": steps,
        "batch_size": batch,
        "parameters": params_count(model),
        "train_clips": summary.by_split.get("train"),
        "settings": {},
    }
    losses = [r["loss"] for rs in runs.values() for r in rs]
    out["same_loss_in_every_run"] = max(losses) - min(losses) < 1e-4 * abs(losses[0])
    for setting, rs in runs.items():
        best = max(rs, key=lambda r: r["samples_per_s"])
        out["settings"][setting] = {
            "best_samples_per_s": round(best["samples_per_s"], 2),
            "median_samples_per_s": round(statistics.median(r["samples_per_s"] for r in rs), 2),
            "best_median_step_samples_per_s": round(max(r["median_step_samples_per_s"] for r in rs), 2),
            "data_wait_share_of_best": round(best["data_wait_share"], 4),
            "runs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rs],
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Training throughput on CPU: shard loader vs. in-memory batches",
        "",
        f"Measured {result['measured_at']} with `{result['command']}`.",
        f"Synthetic corpus of {result['clips']} clips (`avlops data synth`), preprocessed by `avlops preprocess` into "
        "float16 shards; model, objective and optimiser from `configs/train/<model>.yaml` (MGA tv/ta/tav with fine "
        "similarity + masked-LM captions, AdamW), float32 on the CPU. samples/s exclude each run's first step and "
        "checkpoint writes. The machine is shared with other jobs, so single runs are noisy: the best run and the "
        "median step are the least disturbed figures.",
        "",
        "| model | params | batch | setting | samples/s (best run) | samples/s (median run) "
        "| samples/s (median step, best run) | data-wait share (best run) | vs. memory (best run) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model, m in result["models"].items():
        mem = m["settings"]["memory"]["best_samples_per_s"]
        for setting, s in m["settings"].items():
            lines.append(
                f"| {model} | {m['parameters'] / 1e6:.1f} M | {m['batch_size']} | {setting} | "
                f"{s['best_samples_per_s']:.1f} | {s['median_samples_per_s']:.1f} | "
                f"{s['best_median_step_samples_per_s']:.1f} | {100 * s['data_wait_share_of_best']:.1f} % | "
                f"{s['best_samples_per_s'] / mem:.2f}x |"
            )
    lines += ["", "- `loader-w0`: shards read in the training process; `loader-w2`: 2 DataLoader worker processes;"]
    lines += ["  `memory`: the same `Trainer.step` on batches collated and held in memory (no loader)."]
    same = all(m["same_loss_in_every_run"] for m in result["models"].values())
    lines += [f"- Mean training loss identical in every run and setting (the same steps were taken): **{same}**."]
    lines += [f"- 1-minute load average before the runs: {result['loadavg_1m_start']} on "]
    lines[-1] += f"{result['machine']['usable_cores']} cores (other jobs share the machine)."
    lines += ["", *machine_table(result["machine"])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "avlops train (CPU)",
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "uv run python bench/train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "clips": args.clips,
        "repeats": args.repeats,
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
        "machine": machine(),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="avlops-bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        generate_corpus(SynthConfig(out=str(tmp / "synth"), clips=args.clips, workers=1), progress=False)
        print(f"wrote {args.clips} clips in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for model in args.models:
            result["models"][model] = bench_model(model, tmp / "synth" / "manifest.jsonl", args.repeats, tmp)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "train.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.results / "train.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

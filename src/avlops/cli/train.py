"""``avlops train``: train a VLA model on preprocessed shards, with checkpoints, resumption and metrics."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import ConfigError, build, load_section, override
from avlops.training.params import TrainConfig

__all__ = ["register", "run_train"]

_DESCRIPTION = """\
Train on the --split shards of an `avlops preprocess` output folder (--data). The config is a whole YAML file
(--config configs/train/tiny.yaml) or the [train] section of --params; the flags below override it.

Writes into --out: checkpoints/step-*/ (model.safetensors, state.pt, model_config.json, meta.json; the newest
--keep-last kept), metrics.jsonl, config.json and result.json. A run on a folder with checkpoints resumes from the
newest one exactly where it stopped (a checkpoint from an incompatible config is refused). Several processes:
torchrun --nproc-per-node N --no-python avlops train ... (the batch size is global).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on preprocessed shards (checkpoints, resume, metrics)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 1 training stopped (non-finite loss, checkpoint not written), 2 bad usage or config, "
        "3 missing or unusable data.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, help="training config YAML (the whole file is the config)")
    src.add_argument("--params", type=Path, help="params.yaml to read the [train] section from")
    p.add_argument("--data", type=Path, help="preprocessed folder (index.json + shards); default: the config's data")
    p.add_argument("--out", type=Path, help="run folder: checkpoints, metrics, result; default: the config's out")
    p.add_argument("--model", help="model config name (tiny, small, base) or YAML path")
    p.add_argument(
        "--quarantine",
        type=Path,
        action="append",
        help="a quarantine.jsonl (from `avlops data validate`) whose clips are not trained on; repeatable",
    )
    p.add_argument("--steps", type=int, help="optimizer steps (replaces epochs)")
    p.add_argument("--epochs", type=float, help="passes over the split (replaces steps)")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--seed", type=int, help="seed of the initialisation, sample order and random draws")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 = autocast on CUDA")
    p.add_argument("--num-workers", type=int, help="data loader processes per rank")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--pushgateway", help="Prometheus Pushgateway address for the metrics")
    p.add_argument("--stop-at", type=int, help="stop (with a checkpoint) after this many steps; resume later")
    p.add_argument("--no-resume", action="store_true", help="refuse to start if --out already holds checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_train)


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.config is not None:
        cfg = load_section(args.config, None, TrainConfig)
    else:
        cfg = load_section(args.params, "train", TrainConfig)
    if args.steps is not None and args.epochs is not None:
        raise ConfigError("--steps and --epochs: give one")
    length = {}
    if args.steps is not None:
        length = {"steps": args.steps, "epochs": None}
    elif args.epochs is not None:
        length = {"epochs": args.epochs, "steps": None}
    cfg = override(
        cfg,
        model=args.model,
        batch_size=args.batch_size,
        seed=args.seed,
        precision=args.precision,
        num_workers=args.num_workers,
        checkpoint_every=args.checkpoint_every,
        quarantine=None if args.quarantine is None else [*cfg.quarantine, *map(str, args.quarantine)],
    )
    if length:  # override() skips None values; steps and epochs replace each other
        cfg = build(TrainConfig, {**cfg.model_dump(), **length}, "command line")
    if args.pushgateway:
        cfg = override(cfg, metrics=override(cfg.metrics, pushgateway=args.pushgateway))
    cfg = override(
        cfg, data=None if args.data is None else str(args.data), out=None if args.out is None else str(args.out)
    )
    missing = [name for name in ("data", "out") if getattr(cfg, name) is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: give --{' and --'.join(missing)} or set them in the config")
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from avlops.training.checkpoint import CheckpointError  # torch: imported only when the command runs
    from avlops.training.data import DataError
    from avlops.training.loop import TrainError, train
    from avlops.training.params import resolve
    from avlops.training.report import plot_loss_curves, read_run, summary_lines

    cfg = _config(args)
    assert cfg.data is not None and cfg.out is not None  # _config refuses a config without them
    resolved = resolve(cfg)
    try:
        result = train(
            resolved,
            cfg.data,
            cfg.out,
            resume=not args.no_resume,
            stop_at=args.stop_at,
            progress=not args.no_progress,
        )
    except DataError as err:
        print(f"avlops train: {err}", file=sys.stderr)
        return ExitCode.INPUT
    except (TrainError, CheckpointError) as err:
        print(f"avlops train: {err}", file=sys.stderr)
        return ExitCode.FAILED
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return ExitCode.OK
    loss = ", ".join(f"{k} {v:.4f}" for k, v in result.loss.items() if "/" not in k)
    state = "finished" if result.finished else "stopped"
    print(
        f"{state} at step {result.step}/{result.total_steps} (started at {result.start_step}) on "
        f"{result.world_size} process(es) in {result.seconds:.1f} s: {result.samples_per_s:.1f} samples/s, "
        f"{100 * result.data_wait_share:.0f} % waiting for data"
    )
    if result.dropped:
        from avlops.data.exclusions import describe_dropped

        print(describe_dropped(result.dropped, f"split {str(cfg.split)!r}"))
    elif not cfg.quarantine:
        print("no validation quarantine given (--quarantine or train.quarantine): trained on every preprocessed clip")
    for term in result.skipped_terms:
        print(f"loss term left out, the data has no input for it: {term}")
    if loss:
        print(f"loss: {loss}")
    report = read_run(result.out_dir)
    for line in summary_lines(report)[:2]:
        print(line)
    plot = plot_loss_curves(report)
    print(f"checkpoint: {result.checkpoint}  metrics: {Path(result.out_dir) / 'metrics.jsonl'}  plot: {plot}")
    return ExitCode.OK

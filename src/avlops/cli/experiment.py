"""``avlops experiment modality``: the papers' modality claims, reproduced on the synthetic corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import build, load_section

__all__ = ["register", "run_modality"]

_DESCRIPTION = """\
Train every variant (full: VALOR-B-style audio+video with CLIP4VLA's audio type token; video_only: VALOR⁻B-style,
frames only; no_type_token: the type-token ablation) with every seed on one synthetic corpus, evaluate each run on
its test split, and write a table in the papers' style: text->video, text->audio and text->audio+video R@1/5/10
and captioning CIDEr from video, audio and both, as mean ± sd over seeds.

Writes into the config's out folder (default artifacts/experiments/modality): data/ (corpus and shards), runs/,
eval/ (an `avlops evaluate` report per run), results.json, table.md and modality.png. A rerun reuses finished
runs and evaluations, so an interrupted experiment continues where it stopped.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("experiment", help="reproducible experiments (the papers' modality claims)")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    m = esub.add_parser(
        "modality",
        help="does audio help? text->video vs text->audio+video, and the audio type token ablation",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 1 a run failed, 2 bad usage or config, 3 missing input.",
    )
    m.add_argument(
        "--config",
        type=Path,
        default=Path("configs/experiments/modality.yaml"),
        help="experiment config (default: %(default)s)",
    )
    m.add_argument("--out", type=Path, help="output folder (overrides the config's out)")
    m.add_argument("--seeds", type=int, nargs="+", help="training seeds (override the config's)")
    m.add_argument("--variants", nargs="+", help="variants to run: full, video_only, no_type_token")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")
    m.set_defaults(handler=run_modality)


def run_modality(args: argparse.Namespace) -> int:
    from avlops.experiments.params import ModalityExperimentConfig

    cfg = load_section(args.config, None, ModalityExperimentConfig)
    changes = {"out": None if args.out is None else str(args.out), "seeds": args.seeds, "variants": args.variants}
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        cfg = build(ModalityExperimentConfig, {**cfg.model_dump(mode="json"), **changes}, "command line")

    from avlops.experiments.modality import run_experiment  # torch, matplotlib: only when it runs
    from avlops.training.checkpoint import CheckpointError
    from avlops.training.data import DataError
    from avlops.training.loop import TrainError

    try:
        result = run_experiment(cfg, progress=not args.no_progress)
    except DataError as err:
        print(f"avlops experiment modality: {err}", file=sys.stderr)
        return ExitCode.INPUT
    except (TrainError, CheckpointError) as err:
        print(f"avlops experiment modality: {err}", file=sys.stderr)
        return ExitCode.FAILED
    out = Path(cfg.out)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"results: {out / 'results.json'}  table: {out / 'table.md'}  plot: {out / 'modality.png'}")
    print(f"reports per run: {out / 'eval'}/<variant>/seed-<s>/report.html ({len(result.runs)} runs)")
    return ExitCode.OK

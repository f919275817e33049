"""``avlops demo``: the embedded end-to-end flow on one machine.

DVC makes and versions the dataset (``dvc repro synth``, then ``dvc push`` to the remote of params.yaml); then the
``pretrain`` Kubeflow pipeline runs on kfp.local: the dataset by its DVC reference -> contract check -> preprocess
-> validate (Great Expectations) -> features (Feast) -> train -> evaluate + bless -> catalogue -> register ->
publish -> serve on a local Triton server, which answers a text search and a caption over gRPC. A second run reuses
every step that is up to date.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from avlops.cli import ExitCode, describe
from avlops.config import load_section
from avlops.data import versioning
from avlops.params import ProjectParams

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole embedded flow: DVC dataset, then the pretrain pipeline on kfp.local",
        description=describe(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="project parameters (default: %(default)s)")
    p.add_argument("--no-push", action="store_true", help="do not push the dataset to the DVC remote")
    p.add_argument("--no-serve", action="store_true", help="do not serve the registered model and query it")
    p.add_argument("--root", type=Path, default=Path("artifacts/pipeline"), help="pipeline outputs, cache and logs")
    p.add_argument("--procs", type=int, default=1, help="torchrun processes for training (default: %(default)s)")
    p.set_defaults(handler=run_demo)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def run_demo(args: argparse.Namespace) -> int:
    from avlops.cli.pipeline import PARAMETERS, run_and_report
    from avlops.flow.arguments import pipeline_defaults, validate_arguments
    from avlops.flow.dataset import WORKSPACE

    params = load_section(args.params, None, ProjectParams)  # the whole file, so a typo anywhere is caught first
    root = versioning.find_root(args.params.resolve().parent)

    _section("dataset: dvc repro synth")
    start = time.perf_counter()
    try:
        ran = versioning.repro(root, ["synth"])
    except versioning.VersioningError as err:
        print(f"avlops demo: the dataset stage failed: {err}", file=sys.stderr)
        return ExitCode.FAILED
    print(f"{'made' if ran else 'up to date'}: {params.synth.out} in {time.perf_counter() - start:.1f} s")
    if not args.no_push:
        sent = versioning.push(root, params.versioning, ["synth"])
        print(f"pushed {sent} file(s) to DVC remote {params.versioning.remote_name!r}")

    defaults = pipeline_defaults(params, root)
    if "dvc.lock" in versioning.uncommitted(root):  # the dataset version is not committed yet: read the working tree
        defaults["dataset"]["rev"] = WORKSPACE
        print("dvc.lock has uncommitted changes: the pipeline reads the dataset from the working tree")
        print("record the version with: git add dvc.lock && git commit -m 'data: ...'")
    validate_arguments({k: v for k, v in defaults.items() if k != "repository"})
    arguments = {
        "dataset": defaults["dataset"],
        **{name: defaults[section] for section, name in PARAMETERS.items()},
        "train_launcher": "local",
        "train_procs": args.procs,
        "trainjob": {},
        "serve": not args.no_serve,
    }
    _section("pipeline: pretrain on kfp.local")
    return run_and_report("pretrain", arguments, defaults, root / args.root)

"""``avlops pipeline ...``: compile the Kubeflow pipelines, run them on kfp.local, or submit them to a KFP server.

Pipelines: pretrain (a DVC dataset to a blessed, registered, served model), evaluate (a registered version on a
dataset: report and verdict), catalogue_refresh (a version's clip embeddings of a dataset into Feast). Their
parameters default to params.yaml's sections; --set SECTION.KEY=VALUE changes one (validated before anything runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from avlops.cli import ExitCode, describe
from avlops.config import ConfigError, build, load_section
from avlops.params import ProjectParams

__all__ = ["register"]

NAMES = ("pretrain", "evaluate", "catalogue_refresh")
# the pipeline parameter each params.yaml section feeds
PARAMETERS = {
    "check": "check_config",
    "preprocess": "preprocess_config",
    "validation": "validation_config",
    "features": "features_config",
    "train": "train_config",
    "evaluate": "evaluate_config",
    "registry": "registry_config",
    "deploy": "deploy_config",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pipeline", help="compile, run or submit the Kubeflow pipelines", description=describe(__doc__))
    psub = p.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND", required=True)

    c = psub.add_parser(
        "compile",
        help="write each pipeline as the YAML to upload to Kubeflow",
        description="Compile pretrain, evaluate and catalogue_refresh to DIR/<name>.yaml, each checked by parsing it "
        "strictly into KFP's PipelineSpec and PlatformSpec. Parameter defaults come from --params.",
    )
    c.add_argument("--out", type=Path, default=Path("build/pipelines"), help="output folder (default: %(default)s)")
    _common(c)
    c.add_argument("--image", help="the project image every task runs on (infra/docker/component.Dockerfile)")
    c.add_argument("--pvc", help="the ReadWriteMany PVC holding the registry, feature store and TrainJob data")
    c.add_argument("--gpus", type=int, help="GPUs on the train task (default 1)")
    c.add_argument("--accelerator", help="accelerator resource of the train task (default nvidia.com/gpu)")
    c.set_defaults(handler=run_compile)

    r = psub.add_parser(
        "run",
        help="run a pipeline on kfp.local (--local) or submit it to a KFP server (--host)",
        description="--local runs the pipeline here on kfp.local, showing each task and its time; outputs, the "
        "cache and logs go under --root, and a second run reuses every deterministic task whose inputs did not "
        "change. --host compiles the pipeline and creates a run of it on that Kubeflow Pipelines server (token from "
        "KFP_TOKEN). Bad parameters are refused before anything runs.",
    )
    r.add_argument("name", choices=NAMES, help="the pipeline")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run on kfp.local (the embedded default)")
    where.add_argument("--host", help="the Kubeflow Pipelines API URL to submit to")
    _common(r)
    r.add_argument("--version", type=int, help="the registered version (evaluate, catalogue_refresh)")
    r.add_argument(
        "--no-serve",
        action="store_true",
        help="pretrain: no deploy hand-off (serve and query, or roll out: deploy.mode)",
    )
    r.add_argument("--procs", type=int, default=1, help="pretrain: torchrun processes for a local training run")
    r.add_argument("--root", type=Path, default=Path("artifacts/pipeline"), help="--local: outputs, cache, logs")
    r.add_argument("--run-name", help="--host: the run's name (default: <pipeline>-<time>)")
    r.add_argument("--experiment", default="avlops", help="--host: the experiment (default: %(default)s)")
    r.add_argument("--namespace", help="--host: the Kubeflow profile namespace")
    r.set_defaults(handler=run_pipeline)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="project parameters (default: %(default)s)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one parameter, e.g. --set train.epochs=2 (a YAML value); repeatable")  # fmt: skip
    p.add_argument("--dataset-repo", help="the DVC repository (default: this project)")
    p.add_argument("--dataset-path", help="the dataset folder in it (default: params.yaml synth.out)")
    p.add_argument("--dataset-rev", help="git revision (default: HEAD)")
    p.add_argument("--dataset-remote", help="DVC remote URL to read from (default: params.yaml versioning)")


def _apply_sets(values: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """``values`` (pipeline defaults keyed by section) with each ``SECTION.KEY=VALUE`` applied."""
    out: dict[str, Any] = json.loads(json.dumps(values))
    for item in sets:
        key, sep, raw = item.partition("=")
        section, _, path = key.partition(".")
        if not sep or not path or section not in out or not isinstance(out[section], dict):
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of {', '.join(out)}")
        node = out[section]
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: not a YAML value: {err}") from err
    return out


def _defaults(args: argparse.Namespace, *, image: str | None = None, pvc: str | None = None) -> dict[str, Any]:
    from avlops.flow.arguments import pipeline_defaults, validate_arguments
    from avlops.flow.dataset import DatasetRef

    params = load_section(args.params, None, ProjectParams)
    root = args.params.resolve().parent
    defaults = pipeline_defaults(params, root, trainjob={"image": image, "pvc": pvc} if image else None)
    ref = dict(defaults["dataset"])
    for key in ("repo", "path", "rev"):
        value = getattr(args, f"dataset_{key}")
        if value:
            ref[key] = value
    if args.dataset_remote is not None:
        ref["remote_url"] = args.dataset_remote
    defaults["dataset"] = build(DatasetRef, ref, "dataset").model_dump(mode="json")
    defaults = _apply_sets(defaults, args.sets)
    validate_arguments({k: v for k, v in defaults.items() if k != "repository"})
    return defaults


def run_compile(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_all
    from pipelines.options import ClusterOptions

    base = ClusterOptions()
    opts = ClusterOptions(
        image=args.image or base.image,
        pvc=args.pvc or base.pvc,
        gpus=base.gpus if args.gpus is None else args.gpus,
        accelerator=args.accelerator or base.accelerator,
    )
    defaults = _defaults(args, image=opts.image, pvc=opts.pvc)
    for compiled in compile_all(defaults, opts, args.out):
        tasks = sum(len(c.dag.tasks) for c in compiled.spec.components.values()) + len(compiled.spec.root.dag.tasks)
        platform = "with" if compiled.platform is not None else "without"
        print(f"{compiled.path}: {compiled.spec.pipeline_info.name}, {tasks} tasks, {platform} Kubernetes settings")
    print(f"upload a file in the Kubeflow UI (Pipelines -> Upload pipeline), image {opts.image}")
    return ExitCode.OK


def _arguments(name: str, defaults: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of pipeline ``name``: its parameters, from the defaults and the command line."""
    sections = {PARAMETERS[s]: defaults[s] for s in PARAMETERS}
    if name == "pretrain":
        return {
            "dataset": defaults["dataset"], **sections, "train_procs": args.procs, "serve": not args.no_serve,
            "train_launcher": "local" if args.local else "auto", "trainjob": defaults["trainjob"],
        }  # fmt: skip
    if args.version is None:
        raise ConfigError(f"pipeline {name}: --version: which registered version (see `avlops registry list`)")
    keep = ("check_config", "evaluate_config") if name == "evaluate" else ("check_config", "features_config")
    return {
        "version": args.version,
        "dataset": defaults["dataset"],
        "repository": defaults["repository"],
        **{k: sections[k] for k in keep},
    }


def run_pipeline(args: argparse.Namespace) -> int:
    defaults = _defaults(args)
    arguments = _arguments(args.name, defaults, args)
    if args.host:
        return _submit(args, defaults, arguments)
    return run_and_report(args.name, arguments, defaults, args.root)


def run_and_report(name: str, arguments: dict[str, Any], defaults: dict[str, Any], root: Path) -> int:
    """Run a pipeline on kfp.local, showing each task, then its summary, what it served, and its artifacts."""
    from pipelines.local import run_local

    print(f"pipeline {name} on kfp.local (outputs, cache and logs under {root})")
    run = run_local(name, arguments, defaults, root)
    print(f"\n{run.summary().strip() or f'no run summary was written; full log: {run.log}'}\n")
    used = {stage for stage, status in run.statuses().items() if status in ("ran", "reused")}
    metrics = run.output_metadata("evaluate", "metrics") if "evaluate" in used else {}
    if metrics:
        print("metrics: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items() if isinstance(v, int | float)) + "\n")
    answers = run.latest_output("deploy", "answers") if "deploy" in used else None
    if answers is not None:
        print(answers.read_text(encoding="utf-8").strip() + "\n")
    if run.run_dir is not None:
        print(f"artifacts (this run: {run.run_dir}):")
        for task, path in run.artifact_locations().items():
            print(f"  {task}: {path}")
    print(f"{name} {run.state} in {run.seconds:.1f} s; full log: {run.log}")
    if run.state != "SUCCEEDED":
        print(f"avlops pipeline: {run.error}", file=sys.stderr)
        return ExitCode.FAILED
    skipped = [stage for stage, status in run.statuses().items() if status == "skipped"]
    if skipped:  # a gate (the blessing) stopped the run's last steps
        print(f"avlops pipeline: not done: {', '.join(skipped)} skipped (see the summary)", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _submit(args: argparse.Namespace, defaults: dict[str, Any], arguments: dict[str, Any]) -> int:
    import tempfile

    from avlops.flow.dataset import DatasetRef

    if not DatasetRef.model_validate(defaults["dataset"]).is_url:
        raise ConfigError("--host: the dataset repo must be a git URL the cluster can reach: give --dataset-repo URL")

    from pipelines.compile import compile_pipeline
    from pipelines.options import ClusterOptions
    from pipelines.remote import submit

    with tempfile.TemporaryDirectory() as tmp:
        compiled = compile_pipeline(args.name, defaults, ClusterOptions(), Path(tmp))
        run_name = args.run_name or f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            done = submit(
                compiled.path, args.host, arguments, run_name=run_name, experiment=args.experiment,
                namespace=args.namespace,
            )  # fmt: skip
        except Exception as err:  # kfp_server_api raises ApiException, urllib3 its connection errors
            print(f"avlops pipeline: could not submit to {args.host}: {type(err).__name__}: {err}", file=sys.stderr)
            return ExitCode.INPUT
    print(f"submitted run {done.run_name} ({done.run_id}) in experiment {done.experiment}: {done.url}")
    return ExitCode.OK

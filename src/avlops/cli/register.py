"""``avlops register``, ``avlops registry ...`` and ``avlops catalogue ...``: publish blessed models as versions of a
Triton model repository, inspect and promote them, and build and publish the searchable catalogue."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from avlops.cli import ExitCode
from avlops.config import ConfigError, load_section, override
from avlops.registry.params import RegisterConfig

__all__ = ["register"]

_REGISTER = """\
Register a blessed checkpoint (<run>/checkpoints/step-N) as a new version of a Triton model repository.

Refused (exit 1, nothing published) when --eval holds no blessing.json, or an unblessed one, or one about another
checkpoint; when the exported ONNX graphs disagree with eager PyTorch; or when the catalogue was built with other
weights. The catalogue (the clips `search` returns) is --catalogue, or built here from --data.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "register",
        help="export, check and publish a blessed checkpoint as a new registry version",
        description=_REGISTER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 registered, 1 refused, 2 bad usage or config, 3 missing input.",
    )
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder, or a run folder (its newest checkpoint)")
    p.add_argument("--eval", dest="eval_dir", type=Path, help="evaluation folder with blessing.json")
    p.add_argument("--catalogue", type=Path, help="catalogue built by `avlops catalogue build` (default: built here)")
    p.add_argument("--data", type=Path, help="the preprocessed training data (default: the run's config.json)")
    p.add_argument(
        "--quarantine",
        type=Path,
        action="append",
        help="a quarantine.jsonl (from `avlops data validate` or `data check`) whose clips the catalogue built here "
        "leaves out; repeatable, added to [registry] quarantine",
    )
    p.add_argument("--repository", type=Path, help="registry folder (default artifacts/registry)")
    p.add_argument("--alias", help="alias of the new version (default challenger; the first is also champion)")
    p.add_argument("--similarity", choices=["model", "fine", "coarse"], help="how search scores clips")
    p.add_argument("--params", type=Path, help="params.yaml to read [registry] (and [preprocess]) from")
    p.set_defaults(handler=_run_register)

    r = sub.add_parser("registry", help="list, show and promote registered versions")
    rsub = r.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)
    ls = rsub.add_parser("list", help="versions, aliases, blessing and parity")
    show = rsub.add_parser("show", help="print a version's model card (JSON)")
    show.add_argument("ref", help="a version number or an alias")
    promote = rsub.add_parser("promote", help="point an alias (default champion) at a version")
    promote.add_argument("ref", help="a version number or an alias")
    promote.add_argument("--alias", default="champion", help="alias to move (default champion)")
    for q in (ls, show, promote):
        q.add_argument("--repository", type=Path, default=Path("artifacts/registry"), help="registry folder")
    ls.set_defaults(handler=_run_list)
    show.set_defaults(handler=_run_show)
    promote.set_defaults(handler=_run_promote)

    c = sub.add_parser("catalogue", help="build the searchable catalogue; publish a version's to Feast")
    csub = c.add_subparsers(dest="catalogue_command", metavar="SUBCOMMAND", required=True)
    b = csub.add_parser("build", help="encode every clip of a preprocessed folder with a checkpoint")
    b.add_argument("--checkpoint", type=Path, required=True)
    b.add_argument("--data", type=Path, required=True, help="an `avlops preprocess` output folder")
    b.add_argument("--out", type=Path, required=True, help="folder (or .safetensors file) to write")
    b.add_argument("--splits", nargs="+", choices=["train", "val", "test"], help="default: every split")
    b.add_argument(
        "--quarantine",
        type=Path,
        action="append",
        default=[],
        help="a quarantine.jsonl (from `avlops data validate` or `data check`) whose clips are left out; repeatable",
    )
    b.set_defaults(handler=_run_build)
    pub = csub.add_parser("publish", help="write a registered version's clip embeddings to the Feast store")
    pub.add_argument("ref", nargs="?", default="champion", help="a version number or an alias (default champion)")
    pub.add_argument("--repository", type=Path, default=Path("artifacts/registry"), help="registry folder")
    pub.add_argument("--repo-dir", type=Path, help="Feast working folder (default: [features] repo_dir)")
    pub.add_argument("--params", type=Path, help="params.yaml to read [features] from")
    pub.set_defaults(handler=_run_publish)


def _config(args: argparse.Namespace) -> RegisterConfig:
    cfg = load_section(args.params, "registry", RegisterConfig)

    def text(path: Path | None) -> str | None:
        return str(path) if path else None

    cfg = override(
        cfg,
        checkpoint=text(args.checkpoint),
        eval_dir=text(args.eval_dir),
        data=text(args.data),
        catalogue=text(args.catalogue),
        repository=text(args.repository),
        similarity=args.similarity,
        quarantine=None if args.quarantine is None else [*cfg.quarantine, *map(str, args.quarantine)],
    )
    missing = [flag for flag, value in (("--checkpoint", cfg.checkpoint), ("--eval", cfg.eval_dir)) if not value]
    if missing:
        raise ConfigError(f"{' and '.join(missing)}: needed (or checkpoint / eval_dir in [registry] of --params)")
    return cfg


def _print(data: Any) -> None:
    print(json.dumps(data, indent=1, default=str))


def _run_register(args: argparse.Namespace) -> int:
    from avlops.data.exclusions import ExclusionError
    from avlops.evaluation.checkpoint import resolve_checkpoint
    from avlops.preprocessing.params import PreprocessConfig
    from avlops.registry.register import RegistrationRefused, register_model
    from avlops.registry.store import RegistryError
    from avlops.serving.catalogue import CatalogueError

    cfg = _config(args)
    fallback = load_section(args.params, "preprocess", PreprocessConfig) if args.params else None
    checkpoint = resolve_checkpoint(str(cfg.checkpoint))
    data = Path(cfg.data) if cfg.data else None
    try:
        if cfg.catalogue is None:
            out = Path(cfg.repository) / ".catalogue"
            catalogue = _build(checkpoint, data or _run_data(checkpoint), out, None, cfg.quarantine)
        else:
            catalogue = Path(cfg.catalogue)
        result = register_model(
            checkpoint, Path(str(cfg.eval_dir)), catalogue, cfg, data_dir=data, preprocess=fallback, alias=args.alias
        )
    except RegistrationRefused as err:
        print(f"avlops register: {err}", file=sys.stderr)
        return ExitCode.FAILED
    except (RegistryError, CatalogueError) as err:
        print(f"avlops register: {err}", file=sys.stderr)
        return ExitCode.FAILED
    except ExclusionError as err:
        print(f"avlops register: {err}", file=sys.stderr)
        return ExitCode.INPUT
    aliases = ", ".join(f"{k} -> {v}" for k, v in sorted(result.aliases.items()))
    print(f"registered version {result.version} in {result.repository} in {result.seconds:.1f} s ({aliases})")
    for p in result.parity:
        worst = max(p["max_abs_error"].values())
        print(f"  parity {p['model']}: {'ok' if p['passed'] else 'FAILED'} (max |served - eager| {worst:.2g})")
    print(f"model card: {result.card}")
    return ExitCode.OK


def _run_data(checkpoint: Path) -> Path:
    config = checkpoint.parent.parent / "config.json"
    if config.is_file() and (data := json.loads(config.read_text(encoding="utf-8")).get("data")):
        return Path(data)
    raise FileNotFoundError(f"{checkpoint}: no run config.json naming its data; pass --data or --catalogue")


def _build(checkpoint: Path, data: Path, out: Path, splits: list[str] | None, quarantine: list[str]) -> Path:
    """Build and save the catalogue of ``data`` less the clips of the ``quarantine`` files; say what was left out."""
    from avlops.data.exclusions import describe_dropped, read_exclusions
    from avlops.fileio import sha256_file
    from avlops.serving.bundle import WEIGHTS_NAME, load_model
    from avlops.serving.catalogue import build_catalogue

    exclude = read_exclusions(quarantine)
    model = load_model(checkpoint)
    sha = sha256_file(checkpoint / WEIGHTS_NAME)
    catalogue = build_catalogue(model, data, splits=splits, checkpoint_sha256=sha, exclude=exclude)
    if catalogue.dropped:
        print(describe_dropped(catalogue.dropped, "the catalogue"))
    elif not quarantine:
        print("no validation quarantine given (--quarantine): every preprocessed clip is in the catalogue")
    return catalogue.save(out)


def _run_build(args: argparse.Namespace) -> int:
    from avlops.data.exclusions import ExclusionError
    from avlops.serving.catalogue import CatalogueError

    try:
        path = _build(args.checkpoint, args.data, args.out, args.splits, [str(q) for q in args.quarantine])
    except (CatalogueError, ExclusionError) as err:
        print(f"avlops catalogue build: {err}", file=sys.stderr)
        return ExitCode.INPUT
    print(f"catalogue written: {path}")
    return ExitCode.OK


def _registry(args: argparse.Namespace) -> Any:
    from avlops.registry.store import Registry

    return Registry(args.repository)


def _run_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    versions = reg.versions()
    if not versions:
        print(f"{args.repository}: no registered version")
        return ExitCode.OK
    by_version: dict[int, list[str]] = {}
    for alias, v in reg.aliases().items():
        by_version.setdefault(v, []).append(alias)
    print(f"{'version':>7}  {'aliases':<22} {'registered':<26} {'step':>6}  {'blessed':<7} {'parity':<6} clips")
    for v in versions:
        card = reg.card(v)
        parity = "ok" if all(p["passed"] for p in card.get("parity", [])) else "FAILED"
        print(
            f"{v:>7}  {','.join(sorted(by_version.get(v, []))) or '-':<22} {card['registered_at']:<26} "
            f"{card['checkpoint'].get('step') or '-':>6}  {card['evaluation']['blessing']['blessed']!s:<7} "
            f"{parity:<6} {card['catalogue']['clips']}"
        )
    return ExitCode.OK


def _run_show(args: argparse.Namespace) -> int:
    from avlops.registry.store import RegistryError

    reg = _registry(args)
    try:
        _print(reg.card(reg.resolve(args.ref)))
    except RegistryError as err:
        print(f"avlops registry show: {err}", file=sys.stderr)
        return ExitCode.INPUT
    return ExitCode.OK


def _run_promote(args: argparse.Namespace) -> int:
    from avlops.registry.register import relabel_config
    from avlops.registry.store import RegistryError

    reg = _registry(args)
    try:
        with reg.lock():
            version = reg.resolve(args.ref)
            reg.set_alias(args.alias, version, relabel_config)
    except RegistryError as err:
        print(f"avlops registry promote: {err}", file=sys.stderr)
        return ExitCode.FAILED
    print(
        f"{args.alias} -> version {version}; a running `avlops serve --alias {args.alias}` picks it up when "
        "restarted (or within --poll-seconds)"
    )
    return ExitCode.OK


def _run_publish(args: argparse.Namespace) -> int:
    import logging

    from avlops.features.params import FeaturesConfig
    from avlops.registry.store import RegistryError
    from avlops.serving.bundle import CATALOGUE_NAME
    from avlops.serving.catalogue import Catalogue, publish_catalogue
    from avlops.serving.contract import CATALOGUE_SEARCH

    if not args.verbose:
        logging.getLogger("feast").setLevel(logging.WARNING)
    features = override(
        load_section(args.params, "features", FeaturesConfig), repo_dir=str(args.repo_dir) if args.repo_dir else None
    )
    reg = _registry(args)
    try:
        version = reg.resolve(args.ref)
    except RegistryError as err:
        print(f"avlops catalogue publish: {err}", file=sys.stderr)
        return ExitCode.INPUT
    catalogue = Catalogue.load(reg.models / CATALOGUE_SEARCH / str(version) / CATALOGUE_NAME)
    report = publish_catalogue(catalogue, version, features)
    print(
        f"published {report.rows} clip embeddings of version {version} to {features.repo_dir} "
        f"(view clip_embedding, stamped {report.event_timestamp.isoformat()})"
    )
    _print(report.example)
    return ExitCode.OK

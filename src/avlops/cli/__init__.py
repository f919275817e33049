"""The ``avlops`` command line: ``main(argv) -> int`` plus one module per command group."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum

from avlops import __version__
from avlops.config import ConfigError

__all__ = ["ExitCode", "describe", "entry", "main"]


class ExitCode(IntEnum):
    """Exit codes that mean something to a script or a pipeline step."""

    OK = 0
    FAILED = 1  # the job ran, but its gate failed (too many bad records, a failed validation, an unblessed model)
    USAGE = 2  # bad command line or configuration
    INPUT = 3  # an input is missing or unreadable
    INTERRUPTED = 130


Handler = Callable[[argparse.Namespace], int]


def describe(doc: str | None) -> str:
    """A module docstring as ``--help`` text: reST literals (double backquotes) shown as plain words."""
    return (doc or "").replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    from avlops.cli import (  # command groups register themselves
        data,
        demo,
        evaluate,
        experiment,
        features,
        monitor,
        pipeline,
        preprocess,
        register,
        rollout,
        serve,
        train,
    )

    parser = argparse.ArgumentParser(
        prog="avlops",
        description="MLOps for vision-audio-language models: data, training, evaluation, serving and rollout.",
        epilog="Exit codes: 0 ok, 1 a gate failed, 2 bad usage or config, 3 missing or unreadable input.",
    )
    parser.add_argument("--version", action="version", version=f"avlops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data.register(sub)
    preprocess.register(sub)
    features.register(sub)
    train.register(sub)
    evaluate.register(sub)
    register.register(sub)
    serve.register(sub)
    rollout.register(sub)
    monitor.register(sub)
    experiment.register(sub)
    pipeline.register(sub)
    demo.register(sub)
    return parser


def _configure_logging(*, verbose: bool) -> None:
    """Log avlops' own messages to stderr; engines (DVC, Feast, GE) keep their own handlers, so nothing prints twice."""
    logger = logging.getLogger("avlops")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    _configure_logging(verbose=args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as err:
        print(f"avlops: config error:\n{err}", file=sys.stderr)
        return ExitCode.USAGE
    except FileNotFoundError as err:
        print(f"avlops: {err}", file=sys.stderr)
        return ExitCode.INPUT
    except KeyboardInterrupt:
        print("avlops: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def entry() -> None:
    sys.exit(main())

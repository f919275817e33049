"""How a pipeline task's process ends.

A KFP task is one short Python process: the executor loads the component, runs it, writes the task's outputs file and
returns. What is left after that is the interpreter's teardown — collecting and finalising every object of torch,
pandas, Great Expectations or Feast that the step imported — which takes from a few tenths of a second to a few
seconds per task and has no effect the orchestrator can see. :func:`end_after_outputs` skips it: at exit, once the
outputs file the orchestrator asked for has been written by this process, the standard streams and logging are
flushed and the process ends with status 0. A task that failed never wrote its outputs, so its exit (status,
traceback) is Python's own.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["end_after_outputs", "executor_output_file"]


def executor_output_file(argv: Sequence[str]) -> Path | None:
    """The outputs file a KFP executor's command line (``--executor_input JSON``) asks the task to write, if any."""
    for i, arg in enumerate(argv):
        if arg == "--executor_input" and i + 1 < len(argv):
            raw = argv[i + 1]
        elif arg.startswith("--executor_input="):
            raw = arg.split("=", 1)[1]
        else:
            continue
        try:
            found = json.loads(raw).get("outputs", {}).get("outputFile")
        except (ValueError, AttributeError):
            return None
        return Path(found) if isinstance(found, str) and found else None
    return None


def end_after_outputs(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """In a KFP task process, end without the interpreter's teardown once the task's outputs are written.

    Does nothing (returns False) outside a KFP executor (``_KFP_RUNTIME`` unset, or no ``--executor_input``). Call it
    before the step imports its heavy libraries, so that the exit hooks those libraries register run first.
    """
    environ = os.environ if environ is None else environ
    argv = sys.argv if argv is None else argv
    if environ.get("_KFP_RUNTIME") != "true":
        return False
    output = executor_output_file(argv)
    if output is None:
        return False
    started = time.time()

    def _end() -> None:
        try:
            written = output.stat().st_mtime >= started - 1.0
        except OSError:
            return  # not written: the task failed, Python reports it as usual
        if not written:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing left to flush
                stream.flush()
        os._exit(0)

    atexit.register(_end)
    return True

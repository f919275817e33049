"""Run a pipeline on ``kfp.local``: the embedded default. Tasks run as subprocesses in this environment, outputs and
the cache live under one folder (a second run reuses every deterministic task whose inputs did not change).

The full task logs go to a file; the terminal shows which task runs, how long each took, and the run summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kfp import local

from pipelines.build import build_pipeline, task_name
from pipelines.options import ClusterOptions

__all__ = ["LocalRun", "TaskLine", "run_local"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_SKIP = re.compile(r"Skipping (?:conditional )?task '?([\w-]+)'?")


@dataclass
class TaskLine:
    task: str
    status: str  # running, SUCCESS, FAILURE, skipped
    seconds: float = 0.0


@dataclass
class LocalRun:
    pipeline: str
    state: str  # SUCCEEDED or FAILED
    seconds: float
    run_dir: Path | None
    log: Path
    tasks: list[TaskLine] = field(default_factory=list)
    error: str = ""

    def summary(self) -> str:
        """The exit handler's Markdown summary, when it was written."""
        path = self.run_dir / "summary" / "summary" if self.run_dir else None
        return path.read_text(encoding="utf-8") if path and path.is_file() else ""

    def statuses(self) -> dict[str, str]:
        """Each stage's status from the exit handler's summary: ran, reused, skipped, failed, not reached, crashed."""
        meta = self.run_dir / "summary" / "executor_output.json" if self.run_dir else None
        if meta is None or not meta.is_file():
            return {}
        artifacts = json.loads(meta.read_text(encoding="utf-8")).get("artifacts", {})
        found = artifacts.get("summary", {}).get("artifacts", [{}])[0].get("metadata", {}).get("statuses", {})
        return {str(k): str(v) for k, v in found.items()}

    def _runs(self) -> list[Path]:
        """This run's folder, then the earlier runs of the same pipeline, newest first."""
        if self.run_dir is None:
            return []
        prefix = "-".join(self.run_dir.name.split("-")[:-7])  # <pipeline>-YYYY-MM-DD-HH-MM-SS-micro
        others = [p for p in self.run_dir.parent.glob(f"{prefix}-*") if p.is_dir() and p != self.run_dir]
        return [self.run_dir, *sorted(others, key=lambda p: p.name, reverse=True)]

    def latest_output(self, task: str, output: str) -> Path | None:
        """``task``'s ``output`` from this run, or from the newest run that made it (a task reused from the cache does
        not run again, so its outputs stay where that run wrote them)."""
        for run in self._runs():
            if (run / task / output).exists() and (run / task / "executor_output.json").is_file():
                return run / task / output
        return None

    def output_metadata(self, task: str, output: str) -> dict[str, Any]:
        """The metadata of ``task``'s ``output`` (a Metrics artifact is only metadata), from the newest run with it."""
        for run in self._runs():
            meta = run / task / "executor_output.json"
            if meta.is_file():
                found = json.loads(meta.read_text(encoding="utf-8")).get("artifacts", {}).get(output, {})
                for artifact in found.get("artifacts", []):
                    return dict(artifact.get("metadata", {}))
        return {}

    def artifact_locations(self) -> dict[str, Path]:
        """``stage/output`` -> path of every output artifact of the stages that ran or were reused in this run."""
        found: dict[str, Path] = {}
        for stage, status in self.statuses().items():
            if status not in ("ran", "reused"):
                continue
            task = task_name(self.pipeline, stage)
            for run in self._runs():
                folder = run / task
                if (folder / "executor_output.json").is_file():
                    for out in sorted(folder.iterdir()):
                        if out.name != "executor_output.json":
                            found[f"{stage}/{out.name}"] = out
                    break
        return found


class _Progress(io.TextIOBase):
    """Writes everything to the log and turns kfp.local's task lines into one line per task on ``echo``."""

    def __init__(self, log: TextIO, echo: Callable[[str], None]) -> None:
        self.log, self.echo = log, echo
        self.tasks: dict[str, TaskLine] = {}
        self.started: dict[str, float] = {}
        self._buf = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _line(self, line: str) -> None:
        if m := _START.search(line):
            self.started[m.group(1)] = time.perf_counter()
            self.tasks[m.group(1)] = TaskLine(m.group(1), "running")
            self.echo(f"  ▶ {m.group(1)} ...")
        elif m := _END.search(line):
            name, status = m.group(1), m.group(2)
            seconds = time.perf_counter() - self.started.get(name, time.perf_counter())
            self.tasks[name] = TaskLine(name, status, seconds)
            mark = "✓" if status == "SUCCESS" else "✗"
            self.echo(f"  {mark} {name} {status.lower()} in {seconds:.1f} s")
        elif (m := _SKIP.search(line)) and "Skipping" in line:
            self.tasks.setdefault(m.group(1), TaskLine(m.group(1), "skipped"))
            self.echo(f"  – {m.group(1)} skipped")


def run_local(
    name: str,
    arguments: dict[str, Any],
    defaults: dict[str, Any],
    root: Path,
    *,
    echo: Callable[[str], None] | None = None,
) -> LocalRun:
    """Run pipeline ``name`` with ``arguments`` on kfp.local; outputs under ``root/runs``, cache ``root/cache``.

    ``echo`` gets one line per task event (default: this process's standard output).
    """
    if echo is None:
        terminal = sys.stdout
        echo = lambda line: print(line, file=terminal, flush=True)  # noqa: E731
    root = root.resolve()
    runs = root / "runs"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(runs),
        workspace_root=str(root / "workspace"),
        enable_caching=True,
        cache_root=str(root / "cache"),
    )
    # no retries here: the repository, the DVC remote and the stores are on this machine, and a retried bad reference
    # would only wait out KFP's back-off before failing the same way
    pipeline = build_pipeline(name, defaults, ClusterOptions(retries=0))
    before = set(runs.iterdir()) if runs.is_dir() else set()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "logs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    state, error = "SUCCEEDED", ""
    with log_path.open("w", encoding="utf-8") as log:
        progress = _Progress(log, echo)
        with contextlib.redirect_stdout(progress), contextlib.redirect_stderr(progress):
            try:
                pipeline(**arguments)
            except RuntimeError as err:  # kfp.local: a task failed (the exit handler has run)
                state, error = "FAILED", _ANSI.sub("", str(err))
        progress.flush()
    new = sorted(set(runs.iterdir()) - before, key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    return LocalRun(
        pipeline=name,
        state=state,
        seconds=round(time.perf_counter() - t0, 2),
        run_dir=new[-1] if new else None,
        log=log_path,
        tasks=list(progress.tasks.values()),
        error=error,
    )

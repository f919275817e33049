"""What every benchmark records about the machine it ran on, and how it waits for the machine to be quiet.

Imported by the scripts beside it (``python bench/<name>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import avlops

__all__ = [
    "cpu_model",
    "effective_cores",
    "idle_share",
    "machine",
    "machine_table",
    "wait_for_idle",
    "wait_for_quiet",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**extra: Any) -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and avlops versions, then ``extra`` (library versions, settings)."""
    mem_kb = next(
        (int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")), 0
    )
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "avlops": avlops.__version__,
        **extra,
    }


def machine_table(info: dict[str, Any]) -> list[str]:
    """The ``## Machine`` section of a results Markdown file."""
    return ["## Machine", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in info.items())]


def _spin(seconds: float) -> int:
    """Pure-Python busy loop for ``seconds`` of wall time; returns the iterations done (a measure of CPU received)."""
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def effective_cores(workers: int, seconds: float = 0.5) -> float:
    """How many cores the machine gives us right now: CPU work done by ``workers`` concurrent spinners over the work
    one spinner does alone (2.0 on an idle 2-core machine; less when other jobs compete)."""
    one = _spin(seconds)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        many = sum(pool.map(_spin, [seconds] * workers))
    return round(many / one, 2)


def wait_for_quiet(min_cores: float, max_wait: float, label: str = "", workers: int | None = None) -> float:
    """Probe until the machine gives ``min_cores`` effective cores or ``max_wait`` seconds pass; the last probe."""
    workers = workers or len(os.sched_getaffinity(0))
    deadline = time.monotonic() + max_wait
    cores = effective_cores(workers)
    while cores < min_cores and time.monotonic() < deadline:
        print(f"{label + ': ' if label else ''}{cores} effective cores, waiting for a quieter machine", file=sys.stderr)
        time.sleep(10)
        cores = effective_cores(workers)
    return cores


def idle_share(seconds: float = 2.0) -> float:
    """Share of the machine's CPU time that was idle over ``seconds`` (``/proc/stat``), while this script waits."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle(min_idle: float, label: str, max_wait: float = 120.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine is at least ``min_idle`` idle, by :func:`idle_share`: the probe
    for benchmarks whose servers are already running, which spinners would disturb. Returns the last idle share."""
    deadline = time.monotonic() + max_wait
    idle = idle_share()
    while idle < min_idle and time.monotonic() < deadline:
        print(f"[{label}] {100 * idle:.0f} % idle: waiting for a quieter machine", file=sys.stderr)
        time.sleep(10)
        idle = idle_share()
    return idle

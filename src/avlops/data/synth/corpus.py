"""The synthetic corpus on disk: :func:`generate_corpus` renders every clip of the seed (in a worker pool) into
``clips/`` and writes ``manifest.jsonl``, replacing an earlier corpus only when the new one is complete.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avlops.config import ConfigError
from avlops.data.manifest import write_manifest
from avlops.data.params import SynthConfig
from avlops.data.synth.render import make_clip, synthesize_words
from avlops.data.synth.specs import CLIP_DIR, MANIFEST, ClipSpec, record_for, sample_specs

__all__ = ["STAGING_PREFIX", "SynthSummary", "check_config", "generate_corpus"]

STAGING_PREFIX = ".synth-staging-"


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_corpus` made, and how fast."""

    out: Path
    manifest: Path
    clips: int
    by_split: dict[str, int]
    by_audio_type: dict[str, int]
    seconds: float
    workers: int
    groups: int

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("inf")

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "clips": self.clips,
            "groups": self.groups,
            "by_split": self.by_split,
            "by_audio_type": self.by_audio_type,
            "seconds": round(self.seconds, 3),
            "clips_per_s": round(self.clips_per_s, 2),
            "workers": self.workers,
        }


class _ProgressBar(tqdm):  # type: ignore[type-arg]
    """tqdm without its monitor thread (it lingers ~10 s after a bar closes, and a process with threads must start its
    pools the slow, thread-safe way; see :func:`_start_method`). Our bar updates once per clip: nothing to monitor."""

    monitor_interval = 0


# Per-worker state, set once by the pool initializer (the speech cache is sent once, not with every task).
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: SynthConfig, clip_dir: Path, speech: Mapping[str, np.ndarray]) -> None:
    _WORKER.update(cfg=cfg, clip_dir=clip_dir, speech=speech)


def _make_in_worker(spec: ClipSpec) -> int:
    make_clip(spec, _WORKER["cfg"], _WORKER["clip_dir"] / f"{spec.clip_id}.mp4", _WORKER["speech"])
    return spec.index


def _start_method() -> str:
    """``fork`` when this process runs no other Python thread: workers start at once and import nothing. Otherwise
    ``forkserver``, because a fork copies locks that another thread may hold (a server's, tqdm's monitor) and the child
    can deadlock; that costs one fresh interpreter importing this module (~1 s), once per process. Native threads
    (OpenBLAS's pool, started by importing numpy) are not counted: those libraries reset themselves after a fork."""
    methods = mp.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


@contextmanager
def _clip_maker(
    cfg: SynthConfig, clip_dir: Path, speech: Mapping[str, np.ndarray], workers: int
) -> Iterator[Callable[[list[ClipSpec]], Iterator[int]]]:
    """Yield a function that makes clips and yields their indices as they finish, in this process or in a pool."""
    if workers <= 1:
        _init_worker(cfg, clip_dir, speech)
        yield lambda specs: map(_make_in_worker, specs)
        return
    ctx = mp.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([__name__])  # imported once in the server, not in every worker
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, clip_dir, speech)) as pool:
        yield lambda specs: pool.imap_unordered(
            _make_in_worker, specs, chunksize=max(1, min(8, len(specs) // (workers * 4)))
        )


def _swap_in(new: Path, dest: Path, trash: Path) -> None:
    """Replace the folder ``dest`` by ``new`` with two renames on one file system (never a half-written folder; ``dest``
    is missing only for the instant between the renames)."""
    if dest.exists():
        os.replace(dest, trash)
    os.replace(new, dest)


def _default_workers() -> int:
    # the cores this process may run on (a container or taskset can allow fewer than os.cpu_count())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_config(cfg: SynthConfig) -> None:
    """Cross-field checks the section model cannot express; raises :class:`ConfigError`."""
    if cfg.val_fraction + cfg.test_fraction >= 1.0:
        total = cfg.val_fraction + cfg.test_fraction
        raise ConfigError(f"SynthConfig: val_fraction + test_fraction = {total:g} leaves no training data")
    if cfg.size % 2:
        raise ConfigError(f"SynthConfig: size: {cfg.size} must be even (H.264 4:2:0 needs even frame sizes)")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"SynthConfig: out: {out} exists and is not a folder")


def generate_corpus(cfg: SynthConfig, progress: bool = True) -> SynthSummary:
    """Make ``cfg.clips`` clips under ``cfg.out/clips/`` and ``cfg.out/manifest.jsonl``.

    Clips and manifest are made in a staging folder inside ``cfg.out`` and moved in by renames, so a failed run leaves
    the previous corpus as it was and a re-run leaves no stale clips. Nothing else in ``cfg.out`` is touched.
    With more than one worker, processes may start by forkserver (see :func:`_start_method`): a script calling this
    must guard its entry point with ``if __name__ == "__main__":``, as for any multiprocessing that does not fork.
    """
    check_config(cfg)
    t0 = time.perf_counter()
    specs = sample_specs(cfg)
    speech = synthesize_words((s.word for s in specs if s.word is not None), cfg.sample_rate)
    speech_seconds = {w: wav.size / cfg.sample_rate for w, wav in speech.items()}
    records = [record_for(s, cfg, speech_seconds) for s in specs]
    workers = min(cfg.workers or _default_workers(), len(specs))

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGING_PREFIX}*"):  # left by a killed run; would otherwise end up in DVC's hash
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        clip_dir = staging / CLIP_DIR
        clip_dir.mkdir()
        with _clip_maker(cfg, clip_dir, speech, workers) as make_clips:
            bar = _ProgressBar(total=len(specs), desc="synth", unit="clip", disable=None if progress else True)
            with bar:
                for _ in make_clips(specs):
                    bar.update(1)
        write_manifest(staging / MANIFEST, records)
        _swap_in(clip_dir, out / CLIP_DIR, staging / "previous")
        os.replace(staging / MANIFEST, out / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - t0

    def count(values: Iterable[str]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    return SynthSummary(
        out=out,
        manifest=out / MANIFEST,
        clips=len(records),
        by_split=count(r.split.value for r in records),
        by_audio_type=count(r.audio_type.value for r in records),
        seconds=seconds,
        workers=workers,
        groups=len({s.fact_key for s in specs}),
    )

"""Preprocess a whole manifest into shards (:func:`preprocess_manifest`): the dataset run.

:func:`preprocess_manifest` plans shards from the manifest (per split, in manifest order, ``shard_size`` clips each),
skips shards an earlier run finished under the same config hash and inputs, and preprocesses the rest in worker
processes, one shard per task: each worker decodes its shard's clips with
:func:`~avlops.preprocessing.clip.preprocess_clip` and writes the shard atomically itself, so no tensor crosses a
process boundary (parallelism is across shards: a manifest needs at least ``workers`` shards to keep every worker
busy). Randomness is per clip (seeded from the seed and the clip id), so the output is the same for any worker count
and any interruption pattern. A clip that cannot be used goes to ``quarantine.jsonl`` with its reasons (the policy is
in :mod:`avlops.preprocessing.clip`) and the run continues; an unexpected exception (a bug) stops the run, keeping
every shard finished so far. ``index.json`` is written last. What a rerun compares to resume (config, records, media
sizes and mtimes) lives in ``.avlops-resume/`` beside the shards, which DVC ignores: the shards and their records hold
only what was computed, so the same corpus preprocessed anywhere gives the same dataset version. Captions that break
the contract never get here: :func:`~avlops.data.manifest.read_manifest` quarantines them, as this run does duplicate
clip ids.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from avlops.data.manifest import LocatedRecord, Problem, read_manifest, write_quarantine
from avlops.data.media import MediaError
from avlops.data.schema import ClipRecord, MediaPathError, Split
from avlops.data.stats import STATS_DTYPES, STATS_FILE_COLUMNS, STATS_NAME
from avlops.fileio import exclusive_lock, sha256_file, write_bytes_atomic, write_json_atomic
from avlops.preprocessing.clip import ClipError, is_train, preprocess_clip
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.sampling import clip_rng
from avlops.preprocessing.shards import FORMAT_VERSION, INDEX_NAME, read_record, write_parquet_atomic, write_shard
from avlops.preprocessing.text import get_tokenizer

__all__ = ["QUARANTINE_NAME", "RESUME_DIR", "PreprocessSummary", "preprocess_manifest"]

QUARANTINE_NAME = "quarantine.jsonl"
#: per-shard resume fingerprints (local run state; ``.dvcignore`` keeps it out of the dataset's DVC hash)
RESUME_DIR = ".avlops-resume"
_SHARD_RE = re.compile(r"^(train|val|test)-\d{5}\.(safetensors|json)$")
_TEMP_RE = re.compile(
    r"^\.((train|val|test)-\d{5}\.(safetensors|json)|index\.json|stats\.parquet|quarantine\.jsonl)\..*\.tmp$"
)


@dataclass(frozen=True)
class PreprocessSummary:
    """What a run did. ``clips_per_s`` counts the clips attempted in this run (written or quarantined)."""

    out: str
    config_hash: str
    records: int  # manifest lines, valid or not
    clips: int  # clips in the output
    clips_done: int  # preprocessed in this run
    clips_skipped: int  # found in shards an earlier run finished
    quarantined: int  # in quarantine.jsonl (manifest problems included)
    noted: int  # output clips with notes
    shards: int
    shards_written: int
    shards_skipped: int
    workers: int
    seconds: float
    clips_per_s: float
    by_split: dict[str, int] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _ShardPlan:
    name: str  # e.g. "train-00000"
    split: str
    train: bool
    entries: tuple[LocatedRecord, ...]
    fingerprint: str  # config hash + records + media sizes/mtimes: a rerun resumes only if unchanged

    def resume_file(self, out: Path) -> Path:
        """Where the fingerprint of a finished shard is kept: local run state, not part of the dataset."""
        return out / RESUME_DIR / self.name


@dataclass(frozen=True)
class _Outcome:
    """A worker's answer for one clip: its arrays and stats row, or the reasons it was refused."""

    arrays: dict[str, np.ndarray] | None
    stats: dict[str, Any] | None
    reasons: tuple[str, ...] = ()


def _media_state(root: Path, rel: str | None) -> str:
    """Size and mtime of a media file, for the resume fingerprint. Only stat: nothing is opened here (the record's
    path passed the contract's relative-path check; the worker resolves it against the root before opening it)."""
    if rel is None:
        return "-"
    try:
        st = os.stat(root / rel)
    except OSError:
        return f"{rel}:unavailable"
    return f"{rel}:{st.st_size}:{st.st_mtime_ns}"


def _plan(entries: Sequence[LocatedRecord], root: Path, cfg: PreprocessConfig) -> list[_ShardPlan]:
    config_hash = cfg.content_hash()
    plans: list[_ShardPlan] = []
    for split in Split:
        mine = [e for e in entries if e.record.split is split]
        for k in range(0, len(mine), cfg.shard_size):
            chunk = tuple(mine[k : k + cfg.shard_size])
            h = hashlib.sha256(config_hash.encode())
            for e in chunk:
                r = e.record
                h.update(json.dumps(r.to_json_dict(), sort_keys=True).encode())
                h.update(f"|{_media_state(root, r.video)}|{_media_state(root, r.audio)}\n".encode())
            name = f"{split.value}-{k // cfg.shard_size:05d}"
            plans.append(_ShardPlan(name, split.value, is_train(cfg, split), chunk, h.hexdigest()))
    return plans


def _dedupe(entries: Sequence[LocatedRecord]) -> tuple[list[LocatedRecord], list[Problem]]:
    seen: dict[str, LocatedRecord] = {}
    kept: list[LocatedRecord] = []
    problems: list[Problem] = []
    for e in entries:
        prev = seen.get(e.record.clip_id)
        if prev is not None:
            reason = f"duplicate clip_id (first seen on line {prev.line})"
            problems.append(Problem(e.source, e.line, e.record.clip_id, (reason,)))
        else:
            seen[e.record.clip_id] = e
            kept.append(e)
    return kept, problems


def _valid_record(out: Path, plan: _ShardPlan, config_hash: str) -> dict[str, Any] | None:
    """The JSON record of a shard an earlier run finished for exactly this plan, or None."""
    rec = read_record(out / f"{plan.name}.json")
    if rec is None or rec.get("format_version") != FORMAT_VERSION:
        return None
    if rec.get("config_hash") != config_hash:
        return None
    try:
        if plan.resume_file(out).read_text(encoding="utf-8") != plan.fingerprint:
            return None
    except OSError:
        return None
    if rec.get("file") not in (None, f"{plan.name}.safetensors"):
        return None
    if rec.get("file") is not None:
        path = out / rec["file"]
        if not path.is_file() or path.stat().st_size != rec.get("bytes") or sha256_file(path) != rec.get("sha256"):
            return None
    return rec


def _process(record: ClipRecord, root: Path, cfg: PreprocessConfig, train: bool) -> _Outcome:
    """Worker task: preprocess one clip; bad input becomes reasons, anything else propagates.

    Returns plain arrays, frames and fbanks already in the storage dtype."""
    try:
        clip = preprocess_clip(record, root, cfg, train, clip_rng(cfg.seed, record.clip_id))
    except ClipError as err:
        return _Outcome(None, None, err.reasons)
    except (MediaError, MediaPathError) as err:
        return _Outcome(None, None, (str(err),))
    store = np.dtype(cfg.dtype)
    arrays = {
        k: v.numpy().astype(store, copy=False) if k in ("video", "audio") else v.numpy()
        for k, v in clip.tensors().items()
    }
    return _Outcome(arrays, asdict(clip.stats))


def _write_shard(out: Path, plan: _ShardPlan, outcomes: Sequence[_Outcome], cfg: PreprocessConfig) -> dict[str, Any]:
    config_hash = cfg.content_hash()
    good = [(e, o) for e, o in zip(plan.entries, outcomes, strict=True) if o.arrays is not None]
    problems = [
        Problem(e.source, e.line, e.record.clip_id, o.reasons).to_json_dict()
        for e, o in zip(plan.entries, outcomes, strict=True)
        if o.arrays is None
    ]
    rec: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "shard": plan.name,
        "split": plan.split,
        "train_sampling": plan.train,
        "config_hash": config_hash,
        "file": None,
        "bytes": 0,
        "sha256": None,
        "clip_ids": [e.record.clip_id for e, _ in good],
        "captions": 0,
        "stats": [o.stats for _, o in good],
        "problems": problems,
    }
    if good:
        clips = [o.arrays or {} for _, o in good]
        file = f"{plan.name}.safetensors"
        size, digest = write_shard(
            out / file,
            rec["clip_ids"],
            clips,
            split=plan.split,
            config_hash=config_hash,
            train_sampling=plan.train,
            dtype=cfg.dtype,
        )
        rec |= {
            "file": file,
            "bytes": size,
            "sha256": digest,
            "captions": sum(int(c["text"].shape[0]) for c in clips),
        }
    write_bytes_atomic(plan.resume_file(out), plan.fingerprint.encode())
    write_json_atomic(out / f"{plan.name}.json", rec)  # last: marks the shard complete
    return rec


def _do_shard(
    out: Path, plan: _ShardPlan, root: Path, cfg: PreprocessConfig, tick: Callable[[], None]
) -> dict[str, Any]:
    """Preprocess every clip of one planned shard and write it; returns the shard's record."""
    outcomes = []
    for e in plan.entries:
        outcomes.append(_process(e.record, root, cfg, plan.train))
        tick()
    return _write_shard(out, plan, outcomes, cfg)


_ticks: Any = None  # a worker's view of the shared count of clips done (set by _init_worker)


def _init_worker(ticks: Any) -> None:
    global _ticks
    torch.set_num_threads(1)  # one process per core; also avoids OpenMP state inherited through fork
    _ticks = ticks


def _tick() -> None:
    with _ticks.get_lock():  # a shared counter: no queue feeder thread waking up beside the worker for every clip
        _ticks.value += 1


def _shard_task(out: Path, plan: _ShardPlan, root: Path, cfg: PreprocessConfig) -> dict[str, Any]:
    return _do_shard(out, plan, root, cfg, _tick)


@contextmanager
def _torch_single_threaded() -> Iterator[None]:
    """One torch thread in this process for the run: the same arithmetic as a worker (outputs match bit for bit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _resolve_workers(cfg: PreprocessConfig, n_shards: int) -> int:
    n = cfg.workers or len(os.sched_getaffinity(0))
    return max(1, min(n, n_shards))


def _run_shards(
    todo: Sequence[_ShardPlan],
    out: Path,
    root: Path,
    cfg: PreprocessConfig,
    workers: int,
    bar: tqdm[Any],
    done: Callable[[_ShardPlan, dict[str, Any]], None],
) -> None:
    """Preprocess and write the ``todo`` shards, one shard per task, calling ``done`` as each one is written.

    Workers write their own shards, so nothing but progress ticks and small records crosses processes. Largest shards
    go first, so the last tasks are short. An unexpected error stops the run: tasks not started are cancelled, running
    ones finish (their shards are kept for the next run), and the error is raised.
    """
    if workers == 1:

        def tick() -> None:
            bar.update()

        for plan in todo:
            done(plan, _do_shard(out, plan, root, cfg, tick))
        return
    # fork: workers inherit the imported modules and the loaded tokenizer instead of importing them again (~10 s)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    ticks = ctx.Value("q", 0)  # clips done by all workers, for the progress bar
    shown = 0

    def drain() -> None:
        nonlocal shown
        n = ticks.value
        bar.update(n - shown)
        shown = n

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(ticks,))
    try:
        futures = {pool.submit(_shard_task, out, p, root, cfg): p for p in sorted(todo, key=lambda p: -len(p.entries))}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for f in finished:
                done(futures[f], f.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        drain()


def _clean(out: Path, plans: Sequence[_ShardPlan], todo: Sequence[_ShardPlan]) -> None:
    """Remove the index, leftover temporary files, shards no longer planned, and the records of shards to redo."""
    (out / INDEX_NAME).unlink(missing_ok=True)
    planned = {f"{p.name}.{ext}" for p in plans for ext in ("safetensors", "json")}
    for f in out.iterdir():
        if _TEMP_RE.match(f.name) or (_SHARD_RE.match(f.name) and f.name not in planned):
            f.unlink(missing_ok=True)
    for p in todo:
        (out / f"{p.name}.json").unlink(missing_ok=True)
        p.resume_file(out).unlink(missing_ok=True)
    if (resume := out / RESUME_DIR).is_dir():
        names = {p.name for p in plans}
        for f in resume.iterdir():
            if f.name not in names:
                f.unlink(missing_ok=True)


def preprocess_manifest(manifest: Path, out: Path, cfg: PreprocessConfig, progress: bool = True) -> PreprocessSummary:
    """Preprocess every clip of ``manifest`` into shards under ``out`` (see the module docstring).

    Writes ``out/index.json`` last; until then the folder is an incomplete output that a rerun resumes.
    """
    t0 = time.perf_counter()
    entries, problems = read_manifest(manifest)
    n_records = len(entries) + len(problems)
    entries, duplicates = _dedupe(entries)
    root = manifest.parent
    config_hash = cfg.content_hash()
    plans = _plan(entries, root, cfg)
    out.mkdir(parents=True, exist_ok=True)
    busy = f"{out}: another preprocess run is writing here"
    with exclusive_lock(out, lambda: RuntimeError(busy)), _torch_single_threaded():
        records = {p.name: _valid_record(out, p, config_hash) for p in plans}
        todo = [p for p in plans if records[p.name] is None]
        _clean(out, plans, todo)
        n_clips = sum(len(p.entries) for p in todo)
        workers = _resolve_workers(cfg, len(todo))
        if todo:
            get_tokenizer(cfg.context_length)  # load once here; forked workers inherit it

        def done(plan: _ShardPlan, rec: dict[str, Any]) -> None:
            records[plan.name] = rec

        with tqdm(total=n_clips, desc="preprocess", unit="clip", disable=None if progress else True) as bar:
            _run_shards(todo, out, root, cfg, workers, bar, done)
        index, noted = _finish(manifest, out, cfg, plans, records, [*problems, *duplicates])
    elapsed = time.perf_counter() - t0
    written = {p.name for p in todo}
    clips_done = sum(len(r["clip_ids"]) for name, r in records.items() if r is not None and name in written)
    return PreprocessSummary(
        out=str(out),
        config_hash=config_hash,
        records=n_records,
        clips=index["clips"],
        clips_done=clips_done,
        clips_skipped=index["clips"] - clips_done,
        quarantined=index["quarantined"],
        noted=noted,
        shards=len(index["shards"]),
        shards_written=len(todo),
        shards_skipped=len(plans) - len(todo),
        workers=workers,
        seconds=round(elapsed, 3),
        clips_per_s=round(n_clips / elapsed, 3) if elapsed > 0 else 0.0,
        by_split={s: v["clips"] for s, v in index["splits"].items()},
    )


def _finish(
    manifest: Path,
    out: Path,
    cfg: PreprocessConfig,
    plans: Sequence[_ShardPlan],
    records: dict[str, dict[str, Any] | None],
    problems: list[Problem],
) -> tuple[dict[str, Any], int]:
    """Write stats.parquet, quarantine.jsonl and (last) index.json from the shard records; return the index and the
    number of clips with notes."""
    recs = [r for p in plans if (r := records[p.name]) is not None]
    rows = [{**row, "shard": r["file"]} for r in recs for row in r["stats"]]
    stats = pd.DataFrame(rows, columns=list(STATS_FILE_COLUMNS)).astype(STATS_DTYPES)
    write_parquet_atomic(out / STATS_NAME, stats)
    problems = problems + [
        Problem(p["source"], p["line"], p["clip_id"], tuple(p["reasons"])) for r in recs for p in r["problems"]
    ]
    problems.sort(key=lambda p: (p.source, p.line or 0))
    write_quarantine(out / QUARANTINE_NAME, problems)
    shards = [
        {
            "file": r["file"],
            "split": r["split"],
            "train_sampling": r["train_sampling"],
            "clips": len(r["clip_ids"]),
            "captions": r["captions"],
            "bytes": r["bytes"],
            "sha256": r["sha256"],
        }
        for r in recs
        if r["file"] is not None
    ]
    by_split = {s.value: sum(sh["clips"] for sh in shards if sh["split"] == s.value) for s in Split}
    n_clips = sum(by_split.values())
    index = {
        "format": "avlops.preprocess",
        "format_version": FORMAT_VERSION,
        "config_hash": cfg.content_hash(),
        "config": cfg.model_dump(mode="json", exclude={"manifest", "out", "workers"}),
        "manifest": str(manifest),
        "clips": n_clips,
        "captions": sum(sh["captions"] for sh in shards),
        "quarantined": len(problems),
        "splits": {s: {"clips": n, "shards": sum(1 for sh in shards if sh["split"] == s)} for s, n in by_split.items()},
        "shards": shards,
        "stats": STATS_NAME,
        "quarantine": QUARANTINE_NAME,
    }
    write_json_atomic(out / INDEX_NAME, index)
    return index, int((stats["notes"] != "").sum())

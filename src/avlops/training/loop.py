"""The training loop: ``train(cfg, data_dir, out_dir) -> TrainResult``.

One process or N data-parallel ranks (torchrun; DDP over the model + objective, contrastive features all-gathered
with gradients, so N ranks take the same step as one process on the same global batch). Every ``checkpoint_every``
steps, at a requested stop and at the end, rank 0 writes an atomic checkpoint; a run started on a folder that holds
checkpoints resumes from the newest one (refusing one from an incompatible config) and continues exactly as an
uninterrupted run would: weights, optimizer, scheduler, RNG, the sample order and the per-step random draws all
resume. A non-finite loss or gradient stops the run before the optimizer touches the weights, with the last good
checkpoint left as it was.

bf16 autocast and gradient checkpointing apply on CUDA only; on a CPU the run trains in fp32 and says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint as checkpoint_fn
from tqdm import tqdm

from avlops.data.exclusions import ExclusionError, describe_dropped, read_exclusions
from avlops.fileio import exclusive_lock, write_json_atomic
from avlops.models.pretrained import load_clip_state_dict, read_state_dict
from avlops.models.vla import ResidualAttentionBlock, VLAModel
from avlops.objective import ObjectiveConfig
from avlops.task import Batch, Gather, LossOutput, compute_losses, objective_for_data
from avlops.training import distributed
from avlops.training.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from avlops.training.data import DataError, GlobalBatchSampler, ShardDataset, build_loader, to_batch
from avlops.training.metrics import TrainMetrics, truncate_log
from avlops.training.optim import build_optimizer, build_scheduler
from avlops.training.params import Precision, ResolvedTrain, TrainConfig, plain, resolve

__all__ = [
    "NonFiniteLossError",
    "TaskModule",
    "TrainError",
    "TrainResult",
    "Trainer",
    "enable_grad_checkpointing",
    "loss_terms",
    "step_generator",
    "train",
]

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
CONFIG_NAME = "config.json"


class TrainError(RuntimeError):
    """Training stopped: the message says why and where the last good checkpoint is."""


class NonFiniteLossError(TrainError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    out_dir: str
    checkpoint: str | None  # the newest checkpoint folder
    start_step: int  # steps already done when this run started (resumed)
    step: int  # steps done when it stopped
    total_steps: int
    finished: bool  # step == total_steps
    world_size: int
    first_loss: dict[str, float]  # this run's first step (global means)
    loss: dict[str, float]  # mean over its last logging interval
    samples_per_s: float  # global samples/s over this run's steps after its first (which warms up); no checkpoints
    data_wait_share: float  # share of that step time spent waiting for batches
    seconds: float
    dropped: dict[str, str] = field(default_factory=dict)  # quarantined clips left out: clip_id -> why
    skipped_terms: list[str] = field(default_factory=list)  # loss terms the data had no input for, and why

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- the model


class TaskModule(nn.Module):
    """The model and its objective as one module, which DDP wraps: every parameter use happens in ``forward``."""

    def __init__(self, model: VLAModel, objective: ObjectiveConfig) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch, generator: torch.Generator, gather: Gather | None) -> LossOutput:
        return compute_losses(self.model, batch, self.objective, generator, gather)


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Recompute every transformer block in backward instead of keeping its activations; returns the block count.

    The blocks' ``forward`` is wrapped in place (non-reentrant ``torch.utils.checkpoint``, which DDP supports), so
    parameter names and checkpoints do not change.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, ResidualAttentionBlock):
            inner = module.forward

            def forward(*args: Any, _inner: Any = inner, **kwargs: Any) -> Tensor:
                out: Tensor = checkpoint_fn(_inner, *args, use_reentrant=False, **kwargs)
                return out

            module.forward = forward  # type: ignore[method-assign]
            n += 1
    return n


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of one step's random draws (caption masks, SpecAugment): a function of (seed, step, rank),
    so a resumed run draws what the uninterrupted run would have."""
    state = np.random.SeedSequence((seed, step, rank)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def loss_terms(objective: ObjectiveConfig) -> list[str]:
    """Every loss term name the objective can produce, in a fixed order ("total" first)."""
    names = ["total"]
    if objective.groups:
        names += ["mga", *(f"mga/{g.value}" for g in objective.groups)]
    if objective.caption is not None:
        names += ["mgc", *(f"mgc/{g.value}" for g in objective.caption.groups)]
    if objective.audio_self is not None:
        names.append("audio_self")
    return names


class Trainer:
    """Model, optimizer, scheduler and one optimizer step: what :func:`train` drives (the benchmark too)."""

    def __init__(
        self, resolved: ResolvedTrain, env: distributed.DistEnv, total_steps: int, model: VLAModel | None = None
    ) -> None:
        cfg = resolved.cfg
        self.cfg, self.env, self.objective = cfg, env, resolved.objective
        if model is None:
            torch.manual_seed(cfg.seed)
            model = VLAModel(resolved.model)
        self.model = model.to(env.device)
        cuda = env.device.type == "cuda"
        self.bf16 = cfg.precision is Precision.BF16 and cuda
        if cfg.precision is Precision.BF16 and not cuda:
            log.info("precision bf16 applies on CUDA only: training in fp32 on %s", env.device)
        if cfg.grad_checkpointing:
            if cuda:
                log.info("gradient checkpointing: %d blocks", enable_grad_checkpointing(self.model))
            else:
                log.info("gradient checkpointing applies on CUDA only: off on %s", env.device)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, pretrained=cfg.pretrained is not None)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, total_steps)
        task = TaskModule(self.model, resolved.objective)
        self.task: nn.Module = task
        if env.distributed:
            # find_unused_parameters: a rank may skip a term (no audio clip for T–A), leaving parameters unused there
            self.task = DistributedDataParallel(
                task, device_ids=[env.device.index] if cuda else None, find_unused_parameters=True
            )
        self.gather: Gather | None = distributed.all_gather_with_grad if env.distributed else None
        self.terms = loss_terms(resolved.objective)

    def lrs(self) -> dict[str, float]:
        return {str(g["name"]): float(g["lr"]) for g in self.optimizer.param_groups}

    def step(self, batch: Batch, step: int) -> tuple[dict[str, float], float]:
        """One optimizer step on this rank's share of global batch ``step``; returns the loss terms averaged over the
        ranks and the gradient norm. Raises :class:`NonFiniteLossError` (on every rank) before touching the weights."""
        self.task.train()
        generator = step_generator(self.cfg.seed, step, self.env.rank)
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out: LossOutput = self.task(batch, generator, self.gather)
        terms = self._reduce({"total": out.total.detach(), **out.terms})
        if not math.isfinite(terms["total"]):
            raise NonFiniteLossError(f"the loss is {terms['total']} at step {step + 1} (terms: {_fmt(terms)})")
        out.total.backward()  # type: ignore[no-untyped-call]
        clip = self.cfg.optimizer.grad_clip
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        grad_norm = float(norm)
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the gradient norm is {grad_norm} at step {step + 1} (loss {_fmt(terms)})")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return terms, grad_norm

    def _reduce(self, values: dict[str, Tensor]) -> dict[str, float]:
        """Mean of each term over the ranks that have it (one all-reduce); a term no rank has is left out."""
        vec = torch.zeros(2 * len(self.terms), device=self.env.device)
        for i, name in enumerate(self.terms):
            if name in values:
                vec[2 * i] = values[name].float()
                vec[2 * i + 1] = 1.0
        if self.env.distributed:
            torch.distributed.all_reduce(vec)
        v = vec.tolist()
        return {name: v[2 * i] / v[2 * i + 1] for i, name in enumerate(self.terms) if v[2 * i + 1] > 0}

    def state(self, sampler: GlobalBatchSampler, step: int) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "sampler": {"seed": sampler.seed, "size": sampler.size, "batch_size": sampler.batch_size, "step": step},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])


def _fmt(terms: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in terms.items())


# ----------------------------------------------------------------------------------------------------- the run


@dataclass
class _Clock:
    """Step time and data-wait time (checkpoint writes excluded): per logging window, and over the run's steps after
    its first (worker start-up, allocations)."""

    window_time: float = 0.0
    window_wait: float = 0.0
    run_time: float = 0.0
    run_wait: float = 0.0
    run_steps: int = 0

    def add(self, seconds: float, waited: float, first_step: bool) -> None:
        self.window_time += seconds
        self.window_wait += waited
        if not first_step:
            self.run_time += seconds
            self.run_wait += waited
            self.run_steps += 1

    def take_window(self) -> tuple[float, float]:
        out = (max(self.window_time, 1e-9), self.window_wait)
        self.window_time = self.window_wait = 0.0
        return out


@contextlib.contextmanager
def _run_lock(out_dir: Path, held: bool) -> Iterator[None]:
    """Hold ``out_dir/.lock`` for the run (the main process only), so two runs never write one folder's checkpoints."""
    if not held:
        yield
        return
    with exclusive_lock(out_dir, lambda: TrainError(f"{out_dir}: another training run is writing here")):
        yield


def train(
    cfg: TrainConfig | ResolvedTrain,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = True,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on the ``cfg.split`` shards of ``data_dir`` (an ``avlops preprocess`` output) into ``out_dir``.

    ``out_dir`` gets ``checkpoints/step-*/``, ``metrics.jsonl``, ``config.json`` and ``result.json``. With ``resume``
    a run continues from the newest checkpoint there; without, one must not exist. ``stop_at`` stops (with a
    checkpoint) after that many steps in all, without changing the schedule: the run resumes later as if never
    stopped. Under torchrun every rank calls this with the same arguments.
    """
    resolved = cfg if isinstance(cfg, ResolvedTrain) else resolve(cfg)
    env = distributed.init()
    out = Path(out_dir)
    try:
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
        distributed.barrier(env)
        with _run_lock(out, env.is_main):
            return _train(resolved, Path(data_dir), out, env, resume=resume, stop_at=stop_at, progress=progress)
    finally:
        distributed.cleanup(env)


def _train(
    resolved: ResolvedTrain,
    data_dir: Path,
    out: Path,
    env: distributed.DistEnv,
    *,
    resume: bool,
    stop_at: int | None,
    progress: bool,
) -> TrainResult:
    cfg = resolved.cfg
    try:
        exclude = read_exclusions(cfg.quarantine)
    except ExclusionError as err:
        raise DataError(str(err)) from None
    dataset = ShardDataset(
        data_dir,
        resolved.model,
        split=cfg.split,
        seed=cfg.seed,
        verify_checksums=cfg.verify_checksums,
        exclude=exclude,
        model_name=cfg.model,
    )
    if dataset.dropped:
        log.warning("%s", describe_dropped(dataset.dropped, f"split {str(cfg.split)!r}"))
    try:  # terms the data has no input for are left out (never trained as constants), and said so once
        objective, skipped_terms = objective_for_data(
            resolved.objective, dataset.with_video > 0, dataset.with_audio > 0
        )
    except ValueError as err:
        raise DataError(f"{data_dir}: split {str(cfg.split)!r}: {err}") from None
    if skipped_terms:
        resolved = dataclasses.replace(resolved, objective=objective)
        log.warning("loss terms left out, the data has no input for them: %s", "; ".join(skipped_terms))
    total = _total_steps(resolved, len(dataset), env)
    ckpt = latest_checkpoint(out / CHECKPOINT_DIR)
    if ckpt is not None and not resume:
        raise TrainError(f"{out} already holds checkpoint {ckpt.path.name}; resume, or train into a new folder")
    trainer = Trainer(resolved, env, total)
    start = _restore(trainer, resolved, ckpt, dataset.fingerprint, total)
    end = max(start, total if stop_at is None else min(total, stop_at))

    metrics = TrainMetrics(out, cfg.metrics, out.resolve().name, enabled=env.is_main)
    if env.is_main:
        truncate_log(out, start)
        _write_run_config(out, resolved, data_dir, dataset.fingerprint, env.world_size, total)
    sampler = GlobalBatchSampler(
        len(dataset), cfg.batch_size, seed=cfg.seed, rank=env.rank, world_size=env.world_size, start_step=start
    )
    saver = _Saver(out / CHECKPOINT_DIR, trainer, resolved, sampler, dataset.fingerprint, metrics)
    state = _LoopState(step=start, last_ckpt=str(ckpt.path) if ckpt is not None else None)
    run_start = time.perf_counter()
    _run_steps(trainer, dataset, sampler, saver, metrics, state, end, progress)

    clock = state.clock
    result = TrainResult(
        out_dir=str(out),
        checkpoint=state.last_ckpt,
        start_step=start,
        step=state.step,
        total_steps=total,
        finished=state.step >= total,
        world_size=env.world_size,
        first_loss=state.first,
        loss=state.last_loss,
        samples_per_s=clock.run_steps * cfg.batch_size / clock.run_time if clock.run_time > 0 else 0.0,
        data_wait_share=clock.run_wait / clock.run_time if clock.run_time > 0 else 0.0,
        seconds=time.perf_counter() - run_start,
        dropped=dataset.dropped,
        skipped_terms=skipped_terms,
    )
    if env.is_main:
        write_json_atomic(out / RESULT_NAME, result.to_json_dict())
    return result


def _total_steps(resolved: ResolvedTrain, n_samples: int, env: distributed.DistEnv) -> int:
    """``cfg.steps``, or the steps of ``cfg.epochs`` passes over the data at the global batch size."""
    cfg = resolved.cfg
    if cfg.steps is not None:
        return cfg.steps
    probe = GlobalBatchSampler(n_samples, cfg.batch_size, seed=cfg.seed, world_size=env.world_size)
    return math.ceil((cfg.epochs or 0) * probe.steps_per_epoch)


def _restore(
    trainer: Trainer, resolved: ResolvedTrain, ckpt: Checkpoint | None, data_fingerprint: str, total: int
) -> int:
    """Resume from ``ckpt`` (refusing an incompatible one) or load the pretrained weights; returns the start step."""
    cfg = resolved.cfg
    if ckpt is not None:
        check_compatible(ckpt, resolved.compat(), data_fingerprint)
        state = load_checkpoint(ckpt, trainer.model, map_location=trainer.env.device)
        trainer.load_state(state)
        start = int(state["step"])
        log.info("resuming from %s (step %d of %d)", ckpt.path, start, total)
        return start
    if cfg.pretrained is not None:
        report = load_clip_state_dict(trainer.model, read_state_dict(cfg.pretrained))
        log.info("pretrained weights %s: %s", cfg.pretrained, report.summary())
    return 0


def _write_run_config(
    out: Path, resolved: ResolvedTrain, data_dir: Path, data_fingerprint: str, world_size: int, total: int
) -> None:
    """``config.json``: what this run trains, on what (evaluation and registration read it back)."""
    write_json_atomic(
        out / CONFIG_NAME,
        {
            "train": resolved.cfg.model_dump(mode="json"),
            "model": resolved.model.to_dict(),
            "objective": plain(resolved.objective),
            "data": str(data_dir),
            "data_fingerprint": data_fingerprint,
            "world_size": world_size,
            "total_steps": total,
        },
    )


@dataclass
class _Saver:
    """Writes a checkpoint: rank 0 writes; every rank learns whether it worked (and stops together if not)."""

    root: Path
    trainer: Trainer
    resolved: ResolvedTrain
    sampler: GlobalBatchSampler
    data_fingerprint: str
    metrics: TrainMetrics

    def save(self, step: int, loss: dict[str, float]) -> str | None:
        env, cfg = self.trainer.env, self.resolved.cfg
        error = None
        path = None
        if env.is_main:
            meta = {
                "epoch": self.sampler.epoch_of(max(step - 1, 0)),
                "samples": step * cfg.batch_size,
                "loss": loss,
                "compat": self.resolved.compat(),
                "compat_hash": self.resolved.compat_hash(),
                "data_fingerprint": self.data_fingerprint,
                "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            try:
                saved = save_checkpoint(
                    self.root,
                    step,
                    self.trainer.model,
                    self.trainer.state(self.sampler, step),
                    meta,
                    self.resolved.model.to_dict(),
                    cfg.keep_last,
                )
                path = str(saved.path)
                self.metrics.checkpointed(step)
            except CheckpointError as err:
                error = err
        if not distributed.broadcast_flag(error is None, env):
            raise TrainError(str(error) if error else "rank 0 could not write the checkpoint; training stopped")
        return path


@dataclass
class _LoopState:
    """What the loop has done so far: steps, the newest checkpoint, losses (first step, logging window, last window)
    and the clock."""

    step: int
    last_ckpt: str | None
    first: dict[str, float] = field(default_factory=dict)
    window: dict[str, list[float]] = field(default_factory=dict)
    last_loss: dict[str, float] = field(default_factory=dict)
    clock: _Clock = field(default_factory=_Clock)

    def add(self, terms: dict[str, float], seconds: float, waited: float) -> None:
        self.clock.add(seconds, waited, first_step=not self.first)
        self.first = self.first or terms
        for k, v in terms.items():
            self.window.setdefault(k, []).append(v)

    def close_window(self) -> int:
        """Average the window's losses into ``last_loss`` and start a new window; returns the window's step count."""
        self.last_loss = {k: sum(v) / len(v) for k, v in self.window.items()}
        n_steps = len(self.window["total"])
        self.window = {}
        return n_steps


def _run_steps(
    trainer: Trainer,
    dataset: ShardDataset,
    sampler: GlobalBatchSampler,
    saver: _Saver,
    metrics: TrainMetrics,
    state: _LoopState,
    end: int,
    progress: bool,
) -> None:
    """Steps ``state.step`` .. ``end``: one optimizer step each, logging every ``log_every``, pushing every
    ``push_every`` and checkpointing every ``checkpoint_every`` steps and at ``end``."""
    cfg, env = trainer.cfg, trainer.env
    loader = build_loader(dataset, sampler, num_workers=cfg.num_workers, pin_memory=env.device.type == "cuda")
    batches = iter(loader)
    bar = tqdm(total=end, initial=state.step, disable=not (progress and env.is_main), desc="train", unit="step")
    try:
        for step in range(state.step, end):
            state.step = step
            t0 = time.perf_counter()
            data = next(batches)
            waited = time.perf_counter() - t0
            lrs = trainer.lrs()  # the rates this step uses (the scheduler moves on inside the step)
            try:
                terms, grad_norm = trainer.step(to_batch(data, env.device), step)
            except NonFiniteLossError as err:
                last = state.last_ckpt
                where = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
                raise NonFiniteLossError(f"{err}; training stopped, {where}") from err
            state.add(terms, time.perf_counter() - t0, waited)
            done = step + 1
            bar.update(1)
            if done % cfg.metrics.log_every == 0 or done == end:
                _log_window(state, metrics, bar, sampler, step, lrs, grad_norm, cfg.batch_size)
            if done % cfg.metrics.push_every == 0:
                metrics.push()
            if done % cfg.checkpoint_every == 0 or done == end:
                state.last_ckpt = saver.save(done, terms) or state.last_ckpt
        state.step = end
    finally:
        bar.close()
        del batches  # stops the loader's workers
        metrics.push()


def _log_window(
    state: _LoopState,
    metrics: TrainMetrics,
    bar: tqdm[Any],
    sampler: GlobalBatchSampler,
    step: int,
    lrs: dict[str, float],
    grad_norm: float,
    batch_size: int,
) -> None:
    """One ``metrics.jsonl`` entry for the logging window that ends with ``step``."""
    done = step + 1
    n_steps = state.close_window()
    busy, wait = state.clock.take_window()
    entry = {
        "step": done,
        "epoch": sampler.epoch_of(step),
        "samples": done * batch_size,
        "loss": state.last_loss,
        "lr": lrs,
        "grad_norm": grad_norm,
        "samples_per_s": n_steps * batch_size / busy,
        "data_wait_share": wait / busy,
    }
    metrics.record(entry, n_steps * batch_size)
    bar.set_postfix(loss=f"{state.last_loss['total']:.4f}", sps=f"{entry['samples_per_s']:.1f}")

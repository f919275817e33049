"""Data parallelism: torchrun environment, process group, and an all-gather that carries gradients.

Launch N ranks with ``torchrun --nproc-per-node N --no-python avlops train ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, read here when a run starts (never at import).
The process group uses NCCL on GPUs and Gloo on CPUs.

:func:`all_gather_with_grad` is the ``gather`` of :func:`avlops.task.compute_losses`: every rank computes the
contrastive loss over the global batch, and backward returns to each rank the sum of all ranks' gradients for its
slice. Each rank's parameter gradient is then world_size × its share of the global gradient, and DDP's averaging over
the ranks gives exactly the global batch's gradient.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistEnv",
    "all_gather_with_grad",
    "barrier",
    "broadcast_flag",
    "cleanup",
    "env_from",
    "init",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank, the world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    started_group: bool = False  # True when :func:`init` created the process group (and cleanup must end it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; (0, 1, 0) outside torchrun."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {err}") from None


def init(use_cuda: bool | None = None) -> DistEnv:
    """Join the process group torchrun describes (NCCL on GPU, Gloo on CPU) and pick this rank's device.

    An already initialised group is used as it is. Outside torchrun this is one process on ``cuda:0`` or the CPU.
    """
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if dist.is_available() and dist.is_initialized():
        rank, world, local = dist.get_rank(), dist.get_world_size(), env_from()[2]
        started = False
    else:
        rank, world, local = env_from()
        started = world > 1
        if started:
            dist.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistEnv(rank, world, local, device, started)


def cleanup(env: DistEnv) -> None:
    if env.started_group and dist.is_initialized():
        dist.destroy_process_group()


class _AllGather(torch.autograd.Function):
    """Forward: concatenate every rank's [n, ...] along dim 0. Backward: sum the ranks' gradients, keep own slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # works on Gloo too (no reduce-scatter there)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """[n, ...] on each rank -> [world × n, ...] in rank order; gradients flow back to every rank's own slice.

    Every rank must call it in the same order with the same shape. One process: ``x`` itself.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    out: Tensor = _AllGather.apply(x)  # type: ignore[no-untyped-call]
    return out


def broadcast_flag(value: bool, env: DistEnv, src: int = 0) -> bool:
    """Rank ``src``'s boolean on every rank (e.g. "the checkpoint was written")."""
    if not env.distributed:
        return value
    t = torch.tensor([int(value)], device=env.device)
    dist.broadcast(t, src=src)
    return bool(t.item())


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()

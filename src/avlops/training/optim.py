"""AdamW parameter groups and the learning-rate schedule (VALOR, papers.md §1.8).

Groups: {pretrained towers, new parameters} × {decayed, not decayed}. Bias, LayerNorm weights, embeddings (token,
positional, class, type, frame/slice/modality) and the logit scale are not decayed; every other matrix is. When CLIP
weights are loaded, the text, vision and audio towers (the audio tower starts from the vision one, CLIP4VLA) train at
``pretrained_lr``, the rest (fusion heads, decoder, logit scale) at ``lr`` — VALOR's ``clip_lr`` split.

Schedule: linear warmup from 0 to the peak, then linear (or cosine) decay to ``min_lr_ratio`` × peak at the last step;
one multiplier for every group, so the groups keep their ratio.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from avlops.training.params import Decay, OptimizerConfig, ScheduleConfig

__all__ = ["PRETRAINED_PREFIXES", "build_optimizer", "build_scheduler", "lr_multiplier", "no_decay", "param_groups"]

#: parameter-name prefixes of the towers initialised from CLIP
PRETRAINED_PREFIXES = ("text.", "visual.", "audio.")


def no_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases, LayerNorm weights, the logit scale (all < 2-D) and every embedding table or vector."""
    return param.ndim < 2 or "embedding" in name


def param_groups(model: nn.Module, cfg: OptimizerConfig, pretrained: bool) -> list[dict[str, object]]:
    """AdamW parameter groups, each with a ``name``; empty groups are left out. Shared (tied) weights appear once."""
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower = pretrained and name.startswith(PRETRAINED_PREFIXES)
        buckets.setdefault((tower, no_decay(name, p)), []).append(p)
    tower_lr = cfg.pretrained_lr if cfg.pretrained_lr is not None else cfg.lr
    groups = []
    for tower in (False, True):
        for plain in (False, True):
            params = buckets.get((tower, plain))
            if params:
                groups.append(
                    {
                        "name": f"{'pretrained' if tower else 'new'}{'/no_decay' if plain else ''}",
                        "params": params,
                        "lr": tower_lr if tower else cfg.lr,
                        "weight_decay": 0.0 if plain else cfg.weight_decay,
                    }
                )
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, pretrained: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg, pretrained), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def warmup_steps(cfg: ScheduleConfig, total: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_ratio * total)


def lr_multiplier(step: int, *, total: int, warmup: int, decay: Decay, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): warmup to 1, then decay towards ``min_ratio``
    (reached just after the last step, so no step is wasted at lr 0)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)  # never 0: the first step already moves the weights
    if decay is Decay.CONSTANT:
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)  # 0 at the peak, < 1 at the last step
    if decay is Decay.COSINE:
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    fn = partial(
        lr_multiplier, total=total, warmup=warmup_steps(cfg, total), decay=cfg.decay, min_ratio=cfg.min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)

"""AdamW groups (no decay on bias / LayerNorm / embeddings, pretrained towers at their own lr) and the schedule."""

from __future__ import annotations

import itertools

import pytest
import torch

from avlops.models.vla import VLAModel
from avlops.training.optim import build_optimizer, build_scheduler, lr_multiplier
from avlops.training.params import Decay, OptimizerConfig, ScheduleConfig, TrainConfig, resolve


@pytest.fixture(scope="module")
def model() -> VLAModel:
    return VLAModel(resolve(TrainConfig(model="tiny", steps=1)).model)


def _names(model: VLAModel, opt: torch.optim.Optimizer) -> dict[str, set[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {by_id[id(p)] for p in g["params"]} for g in opt.param_groups}


def test_weight_decay_groups(model: VLAModel) -> None:
    opt = build_optimizer(model, OptimizerConfig(weight_decay=0.05), pretrained=False)
    groups = _names(model, opt)
    assert set(groups) == {"new", "new/no_decay"}
    plain = groups["new/no_decay"]
    for name in (
        "logit_scale",
        "text.token_embedding.weight",
        "text.positional_embedding",
        "visual.class_embedding",
        "audio.type_embedding",
        "decoder.frame_embedding",
        "visual.ln_pre.weight",
        "visual.transformer.resblocks.0.attn.in_proj_bias",
    ):
        assert name in plain, name
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in groups["new"]
    assert "text.text_projection" in groups["new"]
    assert "decoder.lm_head.weight" not in plain | groups["new"]  # tied to the decoder's token embedding: once
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {"new": 0.05, "new/no_decay": 0.0}


def test_pretrained_towers_get_their_own_lr(model: VLAModel) -> None:
    opt = build_optimizer(model, OptimizerConfig(lr=1e-4, pretrained_lr=5e-7), pretrained=True)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"new": 1e-4, "new/no_decay": 1e-4, "pretrained": 5e-7, "pretrained/no_decay": 5e-7}
    groups = _names(model, opt)
    towers = groups["pretrained"] | groups["pretrained/no_decay"]
    assert all(n.startswith(("text.", "visual.", "audio.")) for n in towers)
    assert "text_weight_head.0.weight" in groups["new"] and "decoder.memory_proj.weight" in groups["new"]
    assert opt.defaults["betas"] == (0.9, 0.98)


def test_schedule_warmup_then_decay(model: VLAModel) -> None:
    lin = [lr_multiplier(s, total=10, warmup=2, decay=Decay.LINEAR, min_ratio=0.0) for s in range(10)]
    assert lin[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in itertools.pairwise(lin[2:])) and lin[-1] == pytest.approx(0.125)
    cos = [lr_multiplier(s, total=10, warmup=0, decay=Decay.COSINE, min_ratio=0.1) for s in range(10)]
    assert cos[0] == 1.0 and all(a > b > 0.1 for a, b in itertools.pairwise(cos))
    assert lr_multiplier(7, total=10, warmup=2, decay=Decay.CONSTANT, min_ratio=0.0) == 1.0
    opt = build_optimizer(model, OptimizerConfig(lr=1e-3), pretrained=False)
    sched = build_scheduler(opt, ScheduleConfig(warmup_ratio=0.2), total=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1e-3 * m for m in lin])

"""Two Gloo ranks on one machine take the same optimizer steps as one process on the same global batches."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from avlops.models.vla import VLAModel
from avlops.training.loop import train
from avlops.training.params import TrainConfig, resolve

#: Caption groups tv and ta: ranks hold different numbers of clips with audio, so the caption scaling and the global
#: T–A rows matter. Next-token captions draw nothing at random (masked captions draw per rank by design). A large
#: Adam eps: attention key biases have a gradient that is exactly 0 in theory and float noise in practice, which Adam
#: would otherwise blow up to ±lr on either side.
CONFIG: dict[str, Any] = {
    "model": "tiny",
    "batch_size": 8,
    "steps": 3,
    "num_workers": 0,
    "checkpoint_every": 1000,
    "optimizer": {"lr": 1e-3, "eps": 1e-3},
    "schedule": {"warmup_steps": 0},
    "metrics": {"log_every": 1},
    "objective": {"caption": {"style": "next_token", "groups": ["tav", "ta"]}},
}


def _rank(rank: int, port: int, data: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    result = train(TrainConfig.model_validate(CONFIG), data, out, progress=False)
    assert result.world_size == 2 and result.finished


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_ranks_equal_one_process(tmp_path: Path, tiny_data: Path) -> None:
    # fork: the ranks start with this process's imports instead of paying for them again (seconds each)
    args = (_free_port(), str(tiny_data), str(tmp_path / "ddp"))
    mp.start_processes(_rank, args=args, nprocs=2, join=True, start_method="fork")
    single = train(TrainConfig.model_validate(CONFIG), tiny_data, tmp_path / "single", progress=False)
    assert single.world_size == 1
    ddp_log, one_log = _log(tmp_path / "ddp"), _log(tmp_path / "single")
    for a, b in zip(ddp_log, one_log, strict=True):  # the same global loss terms and gradient norm at every step
        assert a["loss"].keys() == b["loss"].keys()
        for k in a["loss"]:
            assert abs(a["loss"][k] - b["loss"][k]) < 1e-5 * max(1.0, abs(b["loss"][k])), (a["step"], k)
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-5 * b["grad_norm"]
    ddp = load_file(tmp_path / "ddp/checkpoints/step-00000003/model.safetensors")
    one = load_file(tmp_path / "single/checkpoints/step-00000003/model.safetensors")
    torch.manual_seed(0)  # the runs' initial weights: the steps moved them far more than the tolerance
    init = VLAModel(resolve(TrainConfig.model_validate(CONFIG)).model).state_dict()
    assert max(float((one[k] - init[k]).abs().max()) for k in one) > 1e-3
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=0, atol=1e-6, msg=k)

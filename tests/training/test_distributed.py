"""Two Gloo ranks on one machine take the same optimizer steps as one process on the same global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_ranks_equal_one_process(tmp_path: Path, tiny_data: Path) -> None:
    # the documented launch: torchrun starting two `avlops train` processes (gloo on CPU), one thread each
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    argv = [str(bin_dir / "torchrun"), "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    argv += ["--master-port", str(_free_port()), "--no-python", str(bin_dir / "avlops"), "train"]
    argv += ["--config", str(config), "--data", str(tiny_data), "--out", str(tmp_path / "ddp"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 2 process(es)" in done.stdout
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

"""Checkpoints: round trip, pruning, RNG state, and a full disk in the middle of a write."""

from __future__ import annotations

import errno
import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from avlops.training import checkpoint as ckpt_mod
from avlops.training.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight  # tied, like the caption decoder's LM head
        self.norm = nn.LayerNorm(3)


def _save(root: Path, step: int, model: nn.Module, keep_last: int = 2) -> Path:
    meta = {"compat": {"batch_size": 8, "model.embed_dim": 32}, "data_fingerprint": "abc", "loss": {"total": 1.0}}
    state = {"rng": rng_state(), "sampler": {"step": step}}
    return save_checkpoint(root, step, model, state, meta, {"embed_dim": 32}, keep_last).path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_round_trip_and_keep_last(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tied()
    for step in (2, 4, 6):
        _save(tmp_path, step, model)
    assert [c.step for c in list_checkpoints(tmp_path)] == [4, 6]  # keep_last=2
    assert not list(tmp_path.glob(".*"))  # no temporary or half-deleted folders left
    other = Tied()
    state = load_checkpoint(latest_checkpoint(tmp_path), other)
    assert state["step"] == 6 and state["sampler"] == {"step": 6}
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other.head.weight is other.emb.weight  # still tied after loading


def test_rng_state_round_trip() -> None:
    state = rng_state()
    draws = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]


def test_incompatible_checkpoint_names_the_differences(tmp_path: Path) -> None:
    path = _save(tmp_path, 2, Tied())
    c = latest_checkpoint(tmp_path)
    assert check_compatible(c, {"batch_size": 8, "model.embed_dim": 32}, "abc")["step"] == 2
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.embed_dim: 32 in the checkpoint, 64 now"):
        check_compatible(c, {"batch_size": 8, "model.embed_dim": 64}, "abc")
    with pytest.raises(IncompatibleCheckpointError, match="trained on other data"):
        check_compatible(c, {"batch_size": 8, "model.embed_dim": 32}, "xyz")
    with pytest.raises(IncompatibleCheckpointError, match="weights do not fit"):
        load_checkpoint(c, nn.Linear(3, 5))
    assert path.is_dir()


@pytest.mark.parametrize("which", ["_write_weights", "_write_state"])
def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    model = Tied()
    good = _save(tmp_path, 2, model)
    before = _digest(good)
    real = getattr(ckpt_mod, which)

    def full_disk(path: Path, *args: Any) -> None:
        real(path, *args)  # write it, then pretend the disk filled up half way through
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod, which, full_disk)
    with pytest.raises(CheckpointError, match=rf"step 4 .*the disk is full; the last good checkpoint {good} is intact"):
        _save(tmp_path, 4, model, keep_last=1)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2]
    assert not list(tmp_path.glob(".*")), "a partial checkpoint folder was left behind"
    assert _digest(good) == before
    monkeypatch.setattr(ckpt_mod, which, real)
    _save(tmp_path, 4, model, keep_last=1)  # space again: the next save works and prunes step 2
    assert [c.step for c in list_checkpoints(tmp_path)] == [4]

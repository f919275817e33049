"""Fixtures of the training tests: a tiny preprocessed dataset (``training_data``) and a tiny config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from training_data import write_dataset

from avlops.training.params import TrainConfig


@pytest.fixture(autouse=True, scope="session")
def _training_one_thread(one_thread: None) -> None:
    """Single-threaded for the whole session (so module fixtures too): the machine's 2 cores are shared, tiny ops gain
    nothing from more threads, and runs compared bit for bit must use the same thread count."""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training clips in 2 shards (read-only: copy it to damage it)."""
    return write_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture
def make_cfg() -> Callable[..., TrainConfig]:
    """``make_cfg(**changes)``: the tiny model, batch 8, 4 steps, logging every step, checkpoints off until the end."""

    def make(**changes: Any) -> TrainConfig:
        base: dict[str, Any] = {
            "model": "tiny",
            "batch_size": 8,
            "steps": 4,
            "num_workers": 0,
            "checkpoint_every": 1000,
            "keep_last": 2,
            "optimizer": {"lr": 1e-3},
            "schedule": {"warmup_steps": 1},
            "metrics": {"log_every": 1},
        }
        return TrainConfig.model_validate({**base, **changes})

    return make

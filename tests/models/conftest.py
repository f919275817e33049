"""Tiny model fixtures: the ``configs/model/tiny.yaml`` config (width 32, 2 layers, 32 px, 64x128 fbank)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from avlops.config import load_yaml
from avlops.models.vla import EOT_TOKEN_ID, SOT_TOKEN_ID, VLAConfig, VLAModel
from avlops.task import Batch

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run these tests single-threaded: the machine's 2 cores are shared, and tiny ops gain nothing from OpenMP,
    whose spinning threads stall badly when a core is busy elsewhere. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cfg() -> VLAConfig:
    return VLAConfig.from_dict(load_yaml(CONFIG_DIR / "tiny.yaml"))


@pytest.fixture
def make_model(tiny_cfg: VLAConfig) -> Callable[..., VLAModel]:
    """``make_model(seed=0, cfg=tiny_cfg)``: a freshly initialised model in eval mode."""

    def make(seed: int = 0, cfg: VLAConfig | None = None) -> VLAModel:
        torch.manual_seed(seed)
        return VLAModel(cfg or tiny_cfg).eval()

    return make


def random_tokens(batch: int, length: int, generator: torch.Generator, min_len: int = 3) -> torch.Tensor:
    """[B, L] caption ids like the tokenizer's: SOT, random BPE ids, EOT at a random position, zero padding."""
    tokens = torch.randint(1, 49000, (batch, length), generator=generator)
    tokens[:, 0] = SOT_TOKEN_ID
    eot = torch.randint(min_len - 1, length, (batch,), generator=generator)
    for i, e in enumerate(eot.tolist()):
        tokens[i, e] = EOT_TOKEN_ID
        tokens[i, e + 1 :] = 0
    return tokens


@pytest.fixture
def make_batch(tiny_cfg: VLAConfig) -> Callable[..., Batch]:
    """``make_batch(B=4, frames=2, slices=1, seed=0, has_audio=None)``: random inputs of the tiny config's sizes."""

    def make(
        batch: int = 4, frames: int = 2, slices: int = 1, seed: int = 0, has_audio: list[bool] | None = None
    ) -> Batch:
        g = torch.Generator().manual_seed(seed)
        v, a = tiny_cfg.vision, tiny_cfg.audio
        audio = torch.tensor(has_audio) if has_audio is not None else torch.ones(batch, dtype=torch.bool)
        fbank = torch.randn(batch, slices, a.mel_bins, a.target_length, generator=g) * audio[:, None, None, None]
        return Batch(
            tokens=random_tokens(batch, tiny_cfg.text.context_length, g),
            frames=torch.randn(batch, frames, 3, v.image_size, v.image_size, generator=g),
            fbank=fbank,
            has_audio=audio,
            audio_type_weight=torch.rand(batch, generator=g),
        )

    return make

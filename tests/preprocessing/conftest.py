"""Fixtures of the preprocessing tests; the media writers live in ``preprocessing_media``."""

from __future__ import annotations

import pytest

from avlops.preprocessing.params import PreprocessConfig


@pytest.fixture
def tiny_cfg() -> PreprocessConfig:
    """A config small enough for the tests: 32 px, 4/6 frames, 1 s audio slices of 100 fbank frames."""
    return PreprocessConfig(
        frames=4,
        eval_frames=6,
        resolution=32,
        sample_rate=16000,
        target_length=100,
        audio_slices=2,
        context_length=16,
        shard_size=3,
        workers=1,
    )

"""Config section of the preprocessing stage (``preprocess`` in ``params.yaml``).

Defaults are VALOR's (paper §4.1, ``data/data.py``): 224 px frames with CLIP mean/std, 4 frames for training and 8 for
evaluation, 22050 Hz mono audio as a 64-bin Kaldi fbank cut into 512-frame (5.12 s) slices, 2 slices per clip.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from pydantic import Field, model_validator

from avlops.config import StrictModel

__all__ = ["PIPELINE_VERSION", "PreprocessConfig", "SamplingMode", "StorageDType"]

#: Bumped whenever a change in this package changes the tensors it writes; part of the config hash, so shards
#: written by an older version are redone instead of being resumed.
PIPELINE_VERSION = 1

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SamplingMode(StrEnum):
    """Which clips get training-style (random) sampling and which evaluation-style (middle) sampling."""

    BY_SPLIT = "by_split"  # train split: random frame/slice per segment; val and test: the middle one
    TRAIN = "train"  # random everywhere
    EVAL = "eval"  # middle everywhere


class StorageDType(StrEnum):
    """How frames and fbanks are stored in the shards."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


class PreprocessConfig(StrictModel):
    """Decoded media → model tensors: frames, audio fbank slices and caption tokens, written as shards."""

    manifest: str = "data/synth/manifest.jsonl"
    out: str = "data/preprocessed"
    model: str | None = Field(
        None,
        description="the model config (tiny, small, base or a YAML path) the data is for: `avlops preprocess` takes "
        "resolution, fbank bins and length, sample rate and caption context from it",
    )

    # video (VALOR VideoMapper, test transform Resize + CenterCrop)
    frames: int = Field(4, ge=1, le=32, description="frames sampled per clip in training mode")
    eval_frames: int | None = Field(8, ge=1, le=32, description="frames in evaluation mode; None = same as frames")
    resolution: int = Field(224, ge=8, le=1024, description="square side after shorter-side resize + centre crop")
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    # audio (VALOR AudioMapper)
    sample_rate: int = Field(22050, ge=8000, le=96000, description="audio is resampled to this rate")
    num_mel_bins: int = Field(64, ge=8, le=256)
    frame_shift_ms: float = Field(10.0, gt=0)
    frame_length_ms: float = Field(25.0, gt=0)
    target_length: int = Field(512, ge=16, le=4096, description="fbank frames per audio slice")
    audio_slices: int = Field(2, ge=1, le=32, description="slices per clip in training mode")
    eval_audio_slices: int | None = Field(None, ge=1, le=32, description="slices in evaluation mode; None = same")
    audio_mean: float = -4.2677393
    audio_std: float = 4.5689974

    # text (CLIP BPE)
    context_length: int = Field(77, ge=4, le=512)

    # run
    sampling: SamplingMode = SamplingMode.BY_SPLIT
    seed: int = 0
    shard_size: int = Field(
        32, ge=1, le=100_000, description="clips per shard (~85 MB train, ~170 MB eval at the 224 px defaults)"
    )
    dtype: StorageDType = Field(StorageDType.FLOAT32, description="storage dtype of frames and fbanks")
    workers: int = Field(0, ge=0, description="worker processes; 0 = one per CPU core, 1 = in this process")

    @model_validator(mode="after")
    def _positive_std(self) -> PreprocessConfig:
        if any(s <= 0 for s in self.std) or self.audio_std <= 0:
            raise ValueError("std values must be positive")
        return self

    def n_frames(self, train: bool) -> int:
        return self.frames if train or self.eval_frames is None else self.eval_frames

    def n_audio_slices(self, train: bool) -> int:
        return self.audio_slices if train or self.eval_audio_slices is None else self.eval_audio_slices

    def content_hash(self) -> str:
        """Hash of every field that changes the written tensors (not paths or worker count), plus the code version."""
        content = self.model_dump(mode="json", exclude={"manifest", "out", "workers", "model"})
        blob = json.dumps({"pipeline_version": PIPELINE_VERSION, **content}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

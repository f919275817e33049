"""Helpers of the evaluation tests (importable: ``from evaluation_data import ...``): the tiny model's preprocessing
settings, tiny model configs, untrained checkpoints saved the way training saves them, writable data copies."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from avlops.config import load_yaml
from avlops.fileio import write_json_atomic
from avlops.models.vla import VLAConfig, VLAModel
from avlops.objective import ObjectiveConfig
from avlops.preprocessing.params import PreprocessConfig
from avlops.training.checkpoint import save_checkpoint
from avlops.training.params import ResolvedTrain, TrainConfig, plain

REPO = Path(__file__).resolve().parents[2]
#: the tiny model's shapes (configs/model/tiny.yaml): 32 px frames, 64x128 fbank slices, 16 tokens
TINY_PREPROCESS = PreprocessConfig(
    resolution=32,
    frames=2,
    eval_frames=2,
    sample_rate=16000,
    target_length=128,
    audio_slices=1,
    context_length=16,
    dtype="float16",
    shard_size=4,
    workers=1,
)


def tiny_model_config(**changes: Any) -> VLAConfig:
    """configs/model/tiny.yaml with sections updated, e.g. ``tiny_model_config(vision={"image_size": 64})``."""
    data = load_yaml(REPO / "configs" / "model" / "tiny.yaml")
    for section, values in changes.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return VLAConfig.from_dict(data)


def write_checkpoint(run: Path, model_cfg: VLAConfig, objective: ObjectiveConfig | None = None) -> Path:
    """An untrained model saved as training saves it (``save_checkpoint`` + the run's ``config.json``); returns the
    checkpoint folder ``run/checkpoints/step-00000003``."""
    objective = objective or ObjectiveConfig()
    torch.manual_seed(0)
    model = VLAModel(model_cfg)
    compat = ResolvedTrain(TrainConfig(steps=1), model_cfg, objective).compat()
    ckpt = save_checkpoint(run / "checkpoints", 3, model, {}, {"compat": compat}, model_cfg.to_dict(), keep_last=1)
    write_json_atomic(run / "config.json", {"objective": plain(objective), "model": model_cfg.to_dict()})
    return ckpt.path


def copy_data(src: Path, dst: Path) -> Path:
    """A writable copy of a preprocessed folder (to damage it)."""
    shutil.copytree(src, dst)
    return dst

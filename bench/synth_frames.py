"""The frames of a preprocessed synthetic corpus with one visible fact per clip as a class label.

Imported by the probes beside it (``python bench/<name>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from avlops.data.manifest import read_manifest
from avlops.evaluation.dataset import load_eval_set, resolve_manifest
from avlops.models.vla import VLAConfig
from avlops.preprocessing.shards import read_index

__all__ = ["HELD_OUT", "labelled_frames", "train_and_held_out"]

#: The splits a probe scores on: clips whose combination of facts training never saw.
HELD_OUT = ("val", "test")


def labelled_frames(data: str, cfg: VLAConfig, split: str, fact: str, classes: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Frames [N, F, 3, R, R] of one split and the index in ``classes`` of each clip's manifest attribute ``fact``."""
    manifest = resolve_manifest(Path(data), read_index(Path(data)).get("manifest"))
    value = {e.record.clip_id: str(e.record.attributes[fact]) for e in read_manifest(manifest)[0]}
    clips = load_eval_set(data, cfg, split=split, model_name=None)
    frames, labels = [], []
    for idx, batch in clips.batches(torch.arange(len(clips.clip_ids)), 64):
        frames.append(batch.frames)
        labels += [list(classes).index(value[clips.clip_ids[int(i)]]) for i in idx]
    return torch.cat(frames), torch.tensor(labels)


def train_and_held_out(
    data: str, cfg: VLAConfig, fact: str, classes: Sequence[str]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train frames, train labels, held-out frames, held-out labels); held out = val + test."""
    x_train, y_train = labelled_frames(data, cfg, "train", fact, classes)
    held = [labelled_frames(data, cfg, s, fact, classes) for s in HELD_OUT]
    return x_train, y_train, torch.cat([x for x, _ in held]), torch.cat([y for _, y in held])

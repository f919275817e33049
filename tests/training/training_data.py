"""Tiny preprocessed datasets for the training tests, written with the shard writer (importable helpers).

Shards match ``configs/model/tiny.yaml`` (32 px frames, 64x128 fbank slices, 16 tokens). Clips come in 4 classes,
each with its own frame pattern, tone band and caption words, so a few steps visibly lower the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avlops.fileio import sha256_file, write_json_atomic
from avlops.models.vla import EOT_TOKEN_ID, SOT_TOKEN_ID
from avlops.preprocessing.shards import write_shard

AUDIO_TYPES = ("verbal", "nonverbal", "mixed")


def _clip(
    index: int, generator: torch.Generator, frames: int = 2, slices: int = 1, with_video: bool = True
) -> dict[str, torch.Tensor]:
    cls = index % 4
    video = 0.3 * torch.randn(frames, 3, 32, 32, generator=generator)
    video[:, cls % 3, (cls // 3) * 16 : (cls // 3) * 16 + 16] += 1.5  # class pattern: a bright band in one channel
    audio = 0.3 * torch.randn(slices, 64, 128, generator=generator)
    audio[:, cls * 16 : cls * 16 + 16] += 1.0  # class tone: a band of mel bins
    has_audio = index % 5 != 4  # every fifth clip is silent
    if not has_audio:
        audio.zero_()
    text = torch.zeros(2, 16, dtype=torch.long)
    for c in range(2):  # two captions: class words, then a clip-specific word
        words = [1000 + 10 * cls, 1001 + 10 * cls, 2000 + 7 * index + c]
        text[c, : len(words) + 2] = torch.tensor([SOT_TOKEN_ID, *words, EOT_TOKEN_ID])
    if not with_video:  # an audio-only clip: the placeholder preprocessing writes
        video.zero_()
    return {
        "video": video,
        "video_mask": torch.full((frames,), with_video),
        "has_video": torch.tensor(with_video),
        "audio": audio,
        "audio_mask": torch.full((slices,), has_audio),
        "has_audio": torch.tensor(has_audio),
        "text": text,
    }


def write_dataset(
    out: Path, clips: int = 16, shard_size: int = 8, split: str = "train", seed: int = 0, with_video: bool = True
) -> Path:
    """An ``avlops preprocess``-like folder: shards, per-shard records with audio types, and index.json."""
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    shards: list[dict[str, Any]] = []
    for k, start in enumerate(range(0, clips, shard_size)):
        ids = [f"clip{i:04d}" for i in range(start, min(start + shard_size, clips))]
        tensors = [_clip(start + j, g, with_video=with_video) for j in range(len(ids))]
        name = f"{split}-{k:05d}"
        size, digest = write_shard(
            out / f"{name}.safetensors",
            ids,
            tensors,
            split=split,
            config_hash="test",
            train_sampling=True,
            dtype="float16",
        )
        stats = [{"clip_id": c, "audio_type": AUDIO_TYPES[(start + j) % 3]} for j, c in enumerate(ids)]
        write_json_atomic(out / f"{name}.json", {"shard": name, "clip_ids": ids, "stats": stats})
        shards.append(
            {
                "file": f"{name}.safetensors",
                "split": split,
                "clips": len(ids),
                "captions": 2 * len(ids),
                "bytes": size,
                "sha256": digest,
                "train_sampling": True,
            }
        )
    assert all(sha256_file(out / s["file"]) == s["sha256"] for s in shards)
    write_json_atomic(
        out / "index.json",
        {
            "format": "avlops.preprocess",
            "format_version": 1,
            "config_hash": "test",
            "clips": clips,
            "splits": {split: {"clips": clips, "shards": len(shards)}},
            "shards": shards,
        },
    )
    return out

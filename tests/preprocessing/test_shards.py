"""Shard format: stacked tensors + ragged captions round-trip through safetensors; writes are atomic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from avlops.fileio import write_bytes_atomic
from avlops.preprocessing.shards import load_shard, shard_bytes, write_shard


def clip(n_frames: int, n_captions: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(n_frames, 3, 8, 8, generator=g),
        "video_mask": torch.tensor([True] * (n_frames - 1) + [False]),
        "has_video": torch.tensor(True),
        "audio": torch.randn(2, 64, 16, generator=g),
        "audio_mask": torch.tensor([True, False]),
        "has_audio": torch.tensor(seed % 2 == 0),
        "text": torch.randint(0, 49408, (n_captions, 77), generator=g),
    }


def test_round_trip(tmp_path: Path) -> None:
    clips = [clip(4, 1, 0), clip(4, 3, 1), clip(4, 2, 2)]
    size, digest = write_shard(
        tmp_path / "val-00000.safetensors", ["a", "b", "c"], clips, split="val", config_hash="h1", train_sampling=False
    )
    data = (tmp_path / "val-00000.safetensors").read_bytes()
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert data == shard_bytes(["a", "b", "c"], clips, split="val", config_hash="h1", train_sampling=False)
    shard = load_shard(tmp_path / "val-00000.safetensors", expected_hash="h1")
    assert (shard.clip_ids, shard.split, shard.train_sampling, len(shard)) == (["a", "b", "c"], "val", False, 3)
    assert shard.tensors["video"].shape == (3, 4, 3, 8, 8)
    assert shard.tensors["text"].shape == (6, 77)
    assert shard.tensors["caption_offsets"].tolist() == [0, 1, 4, 6]
    for i, c in enumerate(clips):
        back = shard.clip(i)
        assert back.keys() == c.keys()
        for k in c:
            assert torch.equal(back[k], c[k]), k
    with pytest.raises(ValueError, match="expected h2"):
        load_shard(tmp_path / "val-00000.safetensors", expected_hash="h2")


def test_reads_back_with_the_safetensors_library_and_torch_api(tmp_path: Path) -> None:
    clips = [clip(3, 2, 5), clip(3, 1, 6)]
    write_shard(tmp_path / "s.safetensors", ["a", "b"], clips, split="test", config_hash="h", train_sampling=False)
    loaded = load_file(tmp_path / "s.safetensors")  # the reference reader validates offsets and alignment
    assert torch.equal(loaded["video"], torch.stack([c["video"] for c in clips]))
    assert torch.equal(loaded["text"], torch.cat([c["text"] for c in clips]))
    with pytest.raises(ValueError, match="different shapes"):
        shard_bytes(["a", "b"], [clip(3, 1, 0), clip(4, 1, 1)], split="x", config_hash="h", train_sampling=False)


def test_float16_storage(tmp_path: Path) -> None:
    blob = shard_bytes(["a"], [clip(2, 1, 0)], split="train", config_hash="h", train_sampling=True, dtype="float16")
    write_bytes_atomic(tmp_path / "s.safetensors", blob)
    shard = load_shard(tmp_path / "s.safetensors")
    assert shard.tensors["video"].dtype == torch.float16 and shard.tensors["audio"].dtype == torch.float16
    assert shard.tensors["video_mask"].dtype == torch.bool and shard.tensors["text"].dtype == torch.int64

"""The shard dataset (checks, items, caption draws) and the resumable global-batch sampler."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from training_data import AUDIO_TYPES, write_dataset

from avlops.modality import ModalityGroup
from avlops.models.vla import AUDIO_TYPE_WEIGHTS, EOT_TOKEN_ID, VLAConfig
from avlops.training.data import DataError, GlobalBatchSampler, ShardDataset, build_loader, to_batch
from avlops.training.params import TrainConfig, resolve


@pytest.fixture(scope="module")
def tiny_model() -> VLAConfig:
    return resolve(TrainConfig(model="tiny", steps=1)).model


def test_items_and_caption_draws(tiny_data: Path, tiny_model: VLAConfig) -> None:
    ds = ShardDataset(tiny_data, tiny_model, seed=3)
    assert len(ds) == 16 and len(ds.shards) == 2
    item = ds[(8, 0)]
    assert item["frames"].shape == (2, 3, 32, 32) and item["frames"].dtype == torch.float16
    assert item["fbank"].shape == (1, 64, 128) and item["tokens"].shape == (16,)
    assert bool(item["has_audio"]) and not bool(ds[(4, 0)]["has_audio"])  # every fifth clip is silent
    assert float(item["audio_type_weight"]) == AUDIO_TYPE_WEIGHTS[AUDIO_TYPES[8 % 3]]
    # one of the clip's two captions (they differ in the last word), the same one for the same (seed, epoch, clip)
    words = {int(ds[(8, e)]["tokens"][3]) for e in range(12)}
    assert words == {2000 + 56, 2000 + 57}
    assert torch.equal(ds[(9, 5)]["tokens"], ShardDataset(tiny_data, tiny_model, seed=3)[(9, 5)]["tokens"])


def test_long_captions_are_cut_with_eot(tiny_data: Path, tiny_model: VLAConfig) -> None:
    short = replace(tiny_model, text=replace(tiny_model.text, context_length=4))
    tokens = ShardDataset(tiny_data, short)[(0, 0)]["tokens"]
    assert tokens.shape == (4,) and int(tokens[-1]) == EOT_TOKEN_ID


def test_sampler_global_batches_are_split_by_rank_and_resume_anywhere() -> None:
    one = GlobalBatchSampler(20, 8, seed=1)
    assert one.steps_per_epoch == 2  # 4 clips dropped per epoch
    it = iter(one)
    batches = [next(it) for _ in range(6)]
    assert sorted(i for b in batches[:2] for i, _ in b) == sorted({i for b in batches[:2] for i, _ in b})
    assert [b[0][1] for b in batches] == [0, 0, 1, 1, 2, 2]  # (clip, epoch) keys
    assert batches[0] != batches[2]  # a new permutation each epoch
    ranks = [iter(GlobalBatchSampler(20, 8, seed=1, rank=r, world_size=2)) for r in range(2)]
    for b in batches:
        assert next(ranks[0]) + next(ranks[1]) == b  # rank slices in rank order = the global batch
    resumed = iter(GlobalBatchSampler(20, 8, seed=1, start_step=3))
    assert [next(resumed) for _ in range(3)] == batches[3:]
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(20, 8, seed=1, world_size=3)
    with pytest.raises(DataError, match="larger than the 6 clips"):
        GlobalBatchSampler(6, 8, seed=1)


def test_loader_with_workers_gives_the_same_batches(tiny_data: Path, tiny_model: VLAConfig) -> None:
    ds = ShardDataset(tiny_data, tiny_model)
    got = []
    for workers in (0, 1):
        it = iter(build_loader(ds, GlobalBatchSampler(len(ds), 8, seed=0), num_workers=workers))
        got.append([next(it) for _ in range(3)])
        del it
    for a, b in zip(*got, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    batch = to_batch(got[0][0], torch.device("cpu"))
    assert batch.frames.dtype == torch.float32 and batch.frames.shape == (8, 2, 3, 32, 32)
    assert batch.has_audio.dtype == torch.bool and batch.audio_type_weight.shape == (8,)


def test_missing_or_empty_data_is_a_clear_error(tmp_path: Path, tiny_data: Path, tiny_model: VLAConfig) -> None:
    with pytest.raises(DataError, match=r"no index\.json"):
        ShardDataset(tmp_path, tiny_model)
    val = write_dataset(tmp_path / "val_only", clips=4, split="val")
    with pytest.raises(DataError, match=r"no 'train' shards .*'val': 4"):
        ShardDataset(val, tiny_model)
    gone = tmp_path / "gone"
    shutil.copytree(tiny_data, gone)
    (gone / "train-00001.safetensors").unlink()
    with pytest.raises(DataError, match=r"train-00001\.safetensors: shard listed in index\.json is missing"):
        ShardDataset(gone, tiny_model)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_shard_is_a_clear_error(tmp_path: Path, tiny_data: Path, tiny_model: VLAConfig, damage: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shard = data / "train-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":  # same size, header destroyed
        shard.write_bytes(b"\xff" * 64 + raw[64:])
    else:  # one byte of frame data: only the checksum sees it
        raw[-100] ^= 0xFF
        shard.write_bytes(raw)
        ShardDataset(data, tiny_model)  # no checksum: not noticed up front
    with pytest.raises(DataError, match=r"train-00001\.safetensors: corrupt shard"):
        ShardDataset(data, tiny_model, verify_checksums=True)


def test_shards_that_do_not_fit_the_model(tiny_data: Path) -> None:
    small = resolve(TrainConfig(model="small", steps=1)).model
    with pytest.raises(DataError, match=r"frames are \[3, 32, 32\], the model takes \[3, 64, 64\]"):
        ShardDataset(tiny_data, small)


def test_index_records_are_what_preprocess_writes(tiny_data: Path) -> None:
    index = json.loads((tiny_data / "index.json").read_text())
    assert {s["file"] for s in index["shards"]} == {"train-00000.safetensors", "train-00001.safetensors"}


def test_quarantined_clips_are_not_trained_on(tiny_data: Path, tiny_model: VLAConfig, tmp_path: Path) -> None:
    """Issue 12 point 3: clips that `data validate` quarantined stayed in the shards and were trained on."""
    from avlops.data.exclusions import describe_dropped, read_exclusions

    quarantine = tmp_path / "quarantine.jsonl"
    rows = [
        {"source": "stats.parquet", "line": 4, "clip_id": "clip0004", "reasons": ["audio is silent"]},
        {"source": "stats.parquet", "line": 9, "clip_id": "clip0009", "reasons": ["audio is silent"]},
        {"source": "manifest.jsonl", "line": 2, "clip_id": "clip0001", "reasons": ["caption also in split test"]},
        {"source": "manifest.jsonl", "line": 30, "clip_id": None, "reasons": ["invalid JSON"]},
        {"source": "manifest.jsonl", "line": 31, "clip_id": "elsewhere", "reasons": ["not in these shards"]},
    ]
    quarantine.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(ShardDataset(tiny_data, tiny_model)) == 16  # without the quarantine: every clip
    exclude = read_exclusions([quarantine])
    ds = ShardDataset(tiny_data, tiny_model, exclude=exclude)
    assert len(ds) == 13 and sorted(ds.dropped) == ["clip0001", "clip0004", "clip0009"]
    assert ds.fingerprint != ShardDataset(tiny_data, tiny_model).fingerprint  # a resumed run cannot mix the two
    assert describe_dropped(ds.dropped, "split 'train'") == (
        "dropped 3 quarantined clip(s) from split 'train': 2 x audio is silent; 1 x caption also in split test"
    )
    assert all(ds[(i, 0)]["frames"].shape == (2, 3, 32, 32) for i in range(len(ds)))  # every position readable
    everything = {f"clip{i:04d}": "bad" for i in range(16)}
    with pytest.raises(DataError, match="every 'train' clip is quarantined"):
        ShardDataset(tiny_data, tiny_model, exclude=everything)


def test_train_cli_drops_quarantined_clips_and_says_so(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avlops.cli import main

    quarantine = tmp_path / "q.jsonl"
    quarantine.write_text(json.dumps({"clip_id": "clip0002", "reasons": ["audio is silent"]}) + "\n")
    repo = Path(__file__).resolve().parents[2]
    argv = ["train", "--config", str(repo / "configs/train/tiny.yaml"), "--data", str(tiny_data), "--steps", "1"]
    argv += ["--num-workers", "0", "--no-progress", "--batch-size", "4"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--quarantine", str(quarantine)]) == 0
    assert "dropped 1 quarantined clip(s) from split 'train': 1 x audio is silent" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "no validation quarantine given" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "c"), "--quarantine", str(tmp_path / "none.jsonl")]) == 3
    assert "none.jsonl: quarantine file not found" in capsys.readouterr().err


def test_audio_only_data_trains_no_constant_video_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 point 5: on audio-only data mga/tv sat at ln(batch) for the whole run, added to the total."""
    import math

    from avlops.cli import main
    from avlops.objective import ObjectiveConfig
    from avlops.task import compute_losses, objective_for_data

    data = write_dataset(tmp_path / "audio", with_video=False)
    model_cfg = resolve(TrainConfig(model="tiny", steps=1)).model
    ds = ShardDataset(data, model_cfg)
    assert (ds.with_video, ds.with_audio) == (0, 13)  # every fifth clip is silent too

    from avlops.models.vla import VLAModel

    torch.manual_seed(0)
    model = VLAModel(model_cfg)
    batch = to_batch(next(iter(build_loader(ds, GlobalBatchSampler(len(ds), 8, seed=0), num_workers=0))), "cpu")
    terms = compute_losses(model, batch, ObjectiveConfig()).terms
    assert "mga/tv" not in terms and "mga/ta" in terms  # no clip with frames: no T-V term (not ln 8 = 2.08)
    assert not math.isclose(float(terms["mga/tav"]), math.log(8), abs_tol=1e-3)

    objective, skipped = objective_for_data(ObjectiveConfig(), has_video=False, has_audio=True)
    assert skipped == ["mga/tv: no clip has video"] and [g.value for g in objective.groups] == ["ta", "tav"]
    with pytest.raises(ValueError, match="no term left"):
        objective_for_data(ObjectiveConfig(groups=(ModalityGroup.T_V,), caption=None), False, True)

    repo = Path(__file__).resolve().parents[2]
    argv = ["train", "--config", str(repo / "configs/train/tiny.yaml"), "--data", str(data), "--steps", "2"]
    assert main([*argv, "--num-workers", "0", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.count("loss term left out, the data has no input for it: mga/tv: no clip has video") == 1
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("mga/tv" not in row.get("loss", {}) for row in logged) and any(
        "mga/ta" in r.get("loss", {}) for r in logged
    )

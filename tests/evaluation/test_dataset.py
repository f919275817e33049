"""A preprocessed split with its references, and every way data and model can fail to match, named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from evaluation_data import copy_data, tiny_model_config

from avlops.data.manifest import read_manifest
from avlops.evaluation.dataset import MismatchError, load_eval_set
from avlops.modality import Modality
from avlops.models.vla import EOT_TOKEN_ID
from avlops.training.data import DataError


def manifest_of(corpus: Path) -> Path:
    return Path(json.loads((corpus / "index.json").read_text())["manifest"])


def test_loads_the_split_with_its_references(corpus: Path) -> None:
    data = load_eval_set(corpus, tiny_model_config(), split="test")
    records = {e.record.clip_id: e.record for e in read_manifest(manifest_of(corpus))[0]}
    test_ids = [c for c, r in records.items() if r.split == "test"]
    assert sorted(data.clip_ids) == sorted(test_ids) and len(data) == 5
    assert all(data.references[i] == records[c].captions for i, c in enumerate(data.clip_ids))
    assert data.tokens.shape[0] == sum(len(r) for r in data.references) == int(data.caption_offsets[-1])
    assert data.tokens.shape[1] <= 16 and data.truncated == 0
    assert data.caption_text(int(data.caption_offsets[1])) == data.references[1][0]
    assert data.caption_clip.tolist()[: len(data.references[0]) + 1] == [0] * len(data.references[0]) + [1]
    assert data.has_video.all() and data.has_audio.all() and len(data.clips_with(Modality.AUDIO)) == 5
    (idx, batch), *_ = list(data.batches(data.clips_with(Modality.VIDEO), batch_size=4))
    assert (
        idx.tolist() == [0, 1, 2, 3] and batch.frames.shape == (4, 2, 3, 32, 32) and batch.fbank.shape[2:] == (64, 128)
    )
    assert data.thumbnail(0).shape == (32, 32, 3) and data.thumbnail(0, audio=True).shape == (64, 128)


def test_frames_and_fbank_of_another_shape_are_refused(corpus: Path) -> None:
    with pytest.raises(DataError, match=r"frames are \[3, 32, 32\], the model takes \[3, 64, 64\]"):
        load_eval_set(corpus, tiny_model_config(vision={"image_size": 64}))
    # issue 12 point 4: the message names the command that fixes it
    with pytest.raises(
        DataError, match=r"takes \[3, 64, 64\]; preprocess it for this model: avlops preprocess --model"
    ):
        load_eval_set(corpus, tiny_model_config(vision={"image_size": 64}))
    with pytest.raises(DataError, match=r"fbank slices are \[64, 128\], the model takes \[64, 256\]"):
        load_eval_set(corpus, tiny_model_config(audio={"target_length": 256}))


def test_another_tokenizer_is_refused(corpus: Path) -> None:
    with pytest.raises(MismatchError, match=r"vocabulary has 50000 ids.*CLIP BPE tokenizer \(49408 ids\)"):
        load_eval_set(corpus, tiny_model_config(text={"vocab_size": 50000}))


def test_a_longer_caption_context_is_refused_or_cut_as_training_cuts(corpus: Path) -> None:
    short = tiny_model_config(text={"context_length": 8})
    with pytest.raises(
        MismatchError,
        match=r"up to 16 tokens .* the model reads 8: preprocess it for this model: avlops preprocess "
        r"--model m\.yaml --manifest .*manifest\.jsonl --out .*-m",
    ):
        load_eval_set(corpus, short, model_name="m.yaml")
    data = load_eval_set(corpus, short, truncate_captions=True)
    assert data.tokens.shape[1] == 8 and data.truncated > 0
    assert (data.tokens[:, -1] == EOT_TOKEN_ID).sum() == data.truncated  # synth captions all pass 8 tokens


def test_no_such_split(corpus: Path, tmp_path: Path) -> None:
    data = copy_data(corpus, tmp_path / "pre")
    index = json.loads((data / "index.json").read_text())
    index["shards"] = [s for s in index["shards"] if s["split"] != "test"]
    index["splits"]["test"] = {"clips": 0, "shards": 0}
    (data / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"no 'test' split to evaluate \(clips per split: .*'test': 0.*--split train"):
        load_eval_set(data, tiny_model_config())


def test_duplicate_clip_ids_are_refused(corpus: Path, tmp_path: Path) -> None:
    data = copy_data(corpus, tmp_path / "pre")
    index = json.loads((data / "index.json").read_text())
    first = next(s for s in index["shards"] if s["split"] == "test")
    shutil.copy(data / first["file"], data / "test-00099.safetensors")  # the same clips again, under another shard
    index["shards"].append({**first, "file": "test-00099.safetensors"})
    (data / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"the 'test' split holds \d duplicate clip id\(s\): syn-"):
        load_eval_set(data, tiny_model_config())


def test_manifest_problems_are_named(corpus: Path, tmp_path: Path) -> None:
    manifest = manifest_of(corpus)
    lines = manifest.read_text().splitlines()
    test_line = next(i for i, line in enumerate(lines) if '"split": "test"' in line)
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("\n".join(line for i, line in enumerate(lines) if i != test_line) + "\n")
    with pytest.raises(DataError, match=r"1 clip.* are not in this manifest"):
        load_eval_set(corpus, tiny_model_config(), manifest=fewer)
    changed = tmp_path / "changed.jsonl"
    record = json.loads(lines[test_line])
    record["captions"] = record["captions"][:1] + ["one more caption"] * 3
    changed.write_text("\n".join([*lines[:test_line], json.dumps(record), *lines[test_line + 1 :]]) + "\n")
    with pytest.raises(DataError, match=r"caption count of 1 clip.* differs from the shards"):
        load_eval_set(corpus, tiny_model_config(), manifest=changed)
    data = copy_data(corpus, tmp_path / "pre")
    index = json.loads((data / "index.json").read_text())
    (data / "index.json").write_text(json.dumps({**index, "manifest": "gone/manifest.jsonl"}))
    with pytest.raises(FileNotFoundError, match=r"the manifest gone/manifest\.jsonl .* was not found.*--manifest"):
        load_eval_set(data, tiny_model_config())
    assert len(load_eval_set(data, tiny_model_config(), manifest=manifest)) == 5

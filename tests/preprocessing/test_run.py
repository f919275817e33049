"""The manifest run (preprocessing/run.py) and the per-clip transform it calls (preprocessing/clip.py): quarantine of
every bad-input case, stats and index, determinism, resume after a crash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pytest
import torch
from preprocessing_media import record, write_image, write_manifest, write_video, write_wav, write_zero_length

from avlops.data.schema import ClipRecord
from avlops.data.stats import STATS_FILE_COLUMNS
from avlops.preprocessing import run
from avlops.preprocessing.audio import decode_audio
from avlops.preprocessing.clip import ClipError, preprocess_arrays, preprocess_clip
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.run import RESUME_DIR, preprocess_manifest
from avlops.preprocessing.sampling import clip_rng
from avlops.preprocessing.shards import load_shard, read_index

REPO = Path(__file__).resolve().parents[2]

GOOD = {"t1", "t2", "t3", "t4", "t5", "t6", "t7", "v1", "v2", "s1", "s2"}
BAD = {  # clip id → a word its quarantine reason must contain
    "bad_escape": "outside the dataset root",
    "bad_missing": "file not found",
    "bad_empty": "zero-length",
    "bad_cut": "cannot decode video",
    "bad_fastcut": "truncated video",
    "bad_noise": "cannot decode video",
    "bad_mute": "no audio stream",
    "bad_zero_video": "no video stream",
    "bad_zero_audio": "audio stream is empty",
    "bad_caption": "caption 0 is empty",
    "bad_still_sound": "still image has no sound",
}


def _corpus(root: Path) -> Path:
    """A small manifest mixing good clips with one clip per bad-input case (see BAD)."""
    data = root / "data"
    write_video(data / "t1.mp4", n_frames=10)
    write_video(data / "t2.mp4", n_frames=12, audio=(44100, 2))
    write_video(data / "t6.mp4", n_frames=9, size=(48, 32), audio=(22050, 2))
    write_video(data / "v1.mp4", n_frames=16)
    write_video(data / "mute.mp4", audio=None)
    write_wav(data / "a.wav", seconds=1.5, sample_rate=22050, channels=2)
    write_image(data / "still.png")
    write_image(data / "still.jpg", size=(30, 40))
    write_zero_length(data / "zero.mp4")
    write_zero_length(data / "zero.wav")
    whole = write_video(data / "whole.mp4", n_frames=8).read_bytes()
    (data / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # moov atom at the end is lost
    fast = write_video(root / "fast.mp4", n_frames=24, faststart=True).read_bytes()
    (data / "fastcut.mp4").write_bytes(fast[: int(len(fast) * 0.7)])  # index intact, last third of frames gone
    (data / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (data / "empty.mp4").write_bytes(b"")
    write_video(root / "outside" / "secret.mp4")
    (data / "link.mp4").symlink_to(root / "outside" / "secret.mp4")
    recs = [
        record("t1", "t1.mp4"),
        record("t2", "t2.mp4"),
        record("t3", "t1.mp4", captions=["a very long caption " * 10]),
        record("bad_escape", "link.mp4"),
        record("t4", None, audio="a.wav"),
        record("bad_missing", "missing.mp4"),
        record("bad_empty", "empty.mp4"),
        record("bad_cut", "cut.mp4"),
        record("bad_fastcut", "fastcut.mp4"),
        record("bad_noise", "noise.mp4"),
        record("bad_mute", "mute.mp4"),
        record("t5", "mute.mp4", audio_type="unknown"),
        record("bad_zero_video", "zero.mp4"),
        record("bad_zero_audio", "t1.mp4", audio="zero.wav"),
        record("bad_caption", "t1.mp4", captions=["   "]),
        record("t1", "t2.mp4"),  # duplicate id
        record("t6", "t6.mp4"),
        record("t7", "t1.mp4"),
        record("v1", "v1.mp4", split="val"),
        record("v2", "still.png", audio="a.wav", split="val"),
        record("s1", "t2.mp4", split="test"),
        record("s2", "still.jpg", audio_type="unknown", split="test"),
        record("bad_still_sound", "still.png", audio_type="verbal", split="test"),
    ]
    manifest = write_manifest(data, recs)
    with manifest.open("a") as fh:
        fh.write("{not json\n")
    return manifest


def snapshot(out: Path) -> dict[str, str]:
    """The dataset's files (not the lock or the resume state, which DVC ignores) and their digests."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.iterdir())
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cfg() -> PreprocessConfig:
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


@pytest.fixture(scope="module")
def reference(corpus: Path, cfg: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted single-process run, with every path PyAV opened recorded."""
    opened: list[str] = []
    real_open = av.open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    out = tmp_path_factory.mktemp("reference") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(av, "open", spy)
        summary = preprocess_manifest(corpus, out, cfg, progress=False)
    return {"out": out, "summary": summary, "snapshot": snapshot(out), "opened": opened}


def test_the_same_corpus_elsewhere_with_other_mtimes_gives_the_same_dataset(
    corpus: Path, cfg: PreprocessConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset version must not depend on where or when its media were written (DVC hashes the output)."""
    root = corpus.parent.parent
    snapshots = []
    for name, mtime_s in (("a", 1_000_000_000), ("b", 1_700_000_000)):
        copy = tmp_path / name
        shutil.copytree(root, copy, symlinks=True)
        for f in copy.rglob("*"):
            if f.is_file() and not f.is_symlink():
                os.utime(f, ns=(mtime_s * 10**9, mtime_s * 10**9))
        monkeypatch.chdir(copy)  # the manifest as a user names it: quarantine records keep that name
        preprocess_manifest(corpus.relative_to(root), Path("out"), cfg, progress=False)
        snapshots.append(snapshot(copy / "out"))
        assert (copy / "out" / RESUME_DIR).is_dir()
    assert snapshots[0] == snapshots[1]
    assert RESUME_DIR + "/" in (REPO / ".dvcignore").read_text().splitlines()


def test_bad_clips_are_quarantined_with_reasons_and_good_ones_kept(reference: dict[str, Any]) -> None:
    out: Path = reference["out"]
    problems = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    by_id = {p["clip_id"]: "; ".join(p["reasons"]) for p in problems}
    for clip_id, word in BAD.items():
        assert word in by_id.get(clip_id, ""), (clip_id, by_id.get(clip_id))
    assert "duplicate clip_id" in by_id["t1"]  # the second t1 line; the first is kept
    assert any(p["clip_id"] is None and "not valid JSON" in p["reasons"][0] for p in problems)
    assert len(problems) == len(BAD) + 2
    s = reference["summary"]
    assert (s.records, s.clips, s.quarantined, s.clips_done, s.clips_skipped) == (24, 11, 13, 11, 0)
    assert s.by_split == {"train": 7, "val": 2, "test": 2}


def test_stats_table_and_shards_agree(reference: dict[str, Any], cfg: PreprocessConfig) -> None:
    out: Path = reference["out"]
    stats = pd.read_parquet(out / "stats.parquet").set_index("clip_id")
    assert list(stats.reset_index().columns) == list(STATS_FILE_COLUMNS)
    assert set(stats.index) == GOOD
    t2, t4, t5, v2 = stats.loc["t2"], stats.loc["t4"], stats.loc["t5"], stats.loc["v2"]
    assert (t2.frame_count, t2.fps, t2.sample_rate, t2.channels, t2.width) == (12, 8.0, 44100, 2, 32)
    assert "resampled 44100 -> 16000" in t2.notes and "downmixed 2 -> 1" in t2.notes
    assert "cut to 16 tokens" in stats.loc["t3"].notes
    assert (t4.has_video, t4.frame_count, t4.duration_s) == (False, 0, pytest.approx(1.5, abs=0.01))
    assert (t5.has_audio, t5.loudness_dbfs) == (False, -120.0) and "no sound" in t5.notes
    assert (v2.frame_count, v2.width, v2.height, v2.has_audio) == (1, 40, 30, True)
    assert stats.loc["t1"].loudness_dbfs == pytest.approx(-9.0, abs=0.5)
    assert (stats.caption_count == 2).sum() == 10 and stats.loc["t3"].caption_count == 1

    index = read_index(out)
    assert index["config_hash"] == cfg.content_hash() and index["clips"] == 11
    assert [sh["file"] for sh in index["shards"]] == [
        "train-00000.safetensors",
        "train-00001.safetensors",  # train-00002 held only bad clips: no file
        "train-00003.safetensors",
        "train-00004.safetensors",
        "train-00005.safetensors",
        "val-00000.safetensors",
        "test-00000.safetensors",
    ]
    seen = []
    for sh in index["shards"]:
        shard = load_shard(out / sh["file"], expected_hash=index["config_hash"])
        n = cfg.n_frames(sh["train_sampling"])
        assert shard.tensors["video"].shape == (len(shard), n, 3, 32, 32)
        assert shard.tensors["audio"].shape == (len(shard), cfg.n_audio_slices(True), 64, 100)
        for i, cid in enumerate(shard.clip_ids):
            clip = shard.clip(i)
            assert bool(clip["has_audio"]) == stats.loc[cid].has_audio
            assert bool(clip["has_video"]) == stats.loc[cid].has_video
            assert clip["text"].shape == (stats.loc[cid].caption_count, 16)
            if not stats.loc[cid].has_audio:  # the placeholder is zeros and masked, never a spectrogram
                assert not clip["audio"].any() and not clip["audio_mask"].any()
            seen.append(cid)
    assert sorted(seen) == sorted(GOOD)
    assert shard.split == "test" and not shard.train_sampling


def test_a_path_outside_the_root_is_never_opened(reference: dict[str, Any], corpus: Path) -> None:
    outside = (corpus.parent.parent / "outside").resolve()
    opened = [Path(p).resolve() for p in reference["opened"]]
    assert opened, "the spy saw no file at all"
    assert not [p for p in opened if p.is_relative_to(outside)]
    assert not [p for p in opened if p.name == "link.mp4"]


@pytest.mark.timeout(120)  # a fork-safety regression shows up as a hung worker
def test_output_is_identical_for_any_worker_count(
    reference: dict[str, Any], corpus: Path, cfg: PreprocessConfig, tmp_path: Path
) -> None:
    # the reference run decoded in this process first, so the forked workers inherit warm PyAV/torch state
    summary = preprocess_manifest(corpus, tmp_path / "out", cfg.model_copy(update={"workers": 2}), progress=False)
    assert summary.workers == 2
    assert snapshot(tmp_path / "out") == reference["snapshot"]


@pytest.mark.timeout(120)
def test_resume_after_a_worker_crash_gives_the_uninterrupted_output(
    reference: dict[str, Any], corpus: Path, cfg: PreprocessConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = run.preprocess_clip

    def crash_on_t5(rec: ClipRecord, *args: Any) -> Any:
        if rec.clip_id == "t5":  # 12th record, in the fourth train shard
            raise RuntimeError("worker died")
        return real(rec, *args)

    monkeypatch.setattr(run, "preprocess_clip", crash_on_t5)  # forked workers inherit the patch
    out = tmp_path / "out"
    two = cfg.model_copy(update={"workers": 2})
    with pytest.raises(RuntimeError, match="worker died"):
        preprocess_manifest(corpus, out, two, progress=False)
    assert not (out / "index.json").exists()  # an interrupted output is never mistaken for a finished one
    finished = {p.stem for p in out.glob("*-*.json")}  # shards other workers finished before the crash
    assert "train-00003" not in finished
    assert {"train-00000", "train-00001"} <= finished  # started before train-00003, so they ran to the end

    monkeypatch.setattr(run, "preprocess_clip", real)
    summary = preprocess_manifest(corpus, out, two, progress=False)
    assert (summary.shards_skipped, summary.shards_written) == (len(finished), 8 - len(finished))
    assert summary.clips_done + summary.clips_skipped == 11
    assert snapshot(out) == reference["snapshot"]


def test_damaged_shards_and_leftovers_are_redone(
    reference: dict[str, Any], corpus: Path, cfg: PreprocessConfig, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    shard = out / "train-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # a half-written shard that somehow got its final name
    (out / ".train-00000.safetensors.x1.tmp").write_bytes(b"partial")  # a crash's leftover temp file
    (out / "train-00099.safetensors").write_bytes(b"stale")  # from a bigger manifest
    summary = preprocess_manifest(corpus, out, cfg, progress=False)
    assert (summary.shards_written, summary.shards_skipped) == (1, 7)
    assert snapshot(out) == reference["snapshot"]


def test_changed_config_or_input_redoes_the_affected_shards(
    reference: dict[str, Any], corpus: Path, cfg: PreprocessConfig, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    st = (corpus.parent / "v1.mp4").stat()
    os.utime(corpus.parent / "v1.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # only val-00000 uses it
    assert preprocess_manifest(corpus, out, cfg, progress=False).shards_written == 1
    reseeded = preprocess_manifest(corpus, out, cfg.model_copy(update={"seed": 1}), progress=False)
    assert reseeded.shards_written == 8
    new = load_shard(out / "train-00000.safetensors")
    old = load_shard(reference["out"] / "train-00000.safetensors")
    assert not torch.equal(new.tensors["video"], old.tensors["video"])  # other random frames
    assert torch.equal(new.tensors["text"], old.tensors["text"])


def test_serving_arrays_give_the_tensors_the_shard_holds(reference: dict[str, Any], corpus: Path) -> None:
    """Training ⇔ serving parity: decoded arrays through preprocess_arrays equal the shard's tensors for that clip."""
    cfg = PreprocessConfig.model_validate(read_index(reference["out"])["config"])
    shard = load_shard(reference["out"] / "val-00000.safetensors")
    stored = shard.clip(shard.clip_ids.index("v1"))  # v1.mp4, val split: evaluation (middle) picks
    with av.open(str(corpus.parent / "v1.mp4")) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # [T, H, W, 3]
    wave, rate = decode_audio(corpus.parent / "v1.mp4")
    captions = ClipRecord.model_validate(record("v1", "v1.mp4", split="val")).captions
    served = preprocess_arrays(cfg, frames=frames, waveform=wave, sample_rate=rate, captions=captions)
    assert served.keys() == stored.keys()
    for k in served:
        assert torch.equal(served[k], stored[k]), k
    silent = preprocess_arrays(cfg, frames=frames[:1], waveform=np.zeros(10, np.float32), sample_rate=16000)
    assert not silent["has_audio"] and not silent["audio"].any() and silent["text"].shape == (0, 16)


def test_preprocess_clip_raises_every_reason(corpus: Path, cfg: PreprocessConfig) -> None:
    rec = ClipRecord.model_validate(record("x", "missing.mp4", audio="link.mp4"))
    with pytest.raises(ClipError) as err:
        preprocess_clip(rec, corpus.parent, cfg, train=True, rng=clip_rng(0, "x"))
    assert len(err.value.reasons) == 2
    ok = preprocess_clip(ClipRecord.model_validate(record("y", "t1.mp4")), corpus.parent, cfg, train=False, rng=None)
    assert ok.video.pixels.shape == (6, 3, 32, 32) and ok.audio.fbank.shape == (2, 64, 100)
    assert ok.text.tokens.shape == (2, 16) and ok.stats.has_audio

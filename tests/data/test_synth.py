"""The synthetic corpus: real encoding and decoding, checked against the ground truth in each record."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from avlops.cli import ExitCode, main
from avlops.data.manifest import check_manifest, read_manifest
from avlops.data.params import SynthConfig
from avlops.data.schema import AudioType, ClipRecord
from avlops.data.synth import (
    COLOURS,
    MOTIONS,
    PITCHES_HZ,
    SHAPES,
    SOUNDS,
    WORDS,
    ClipSpec,
    captions_for,
    sample_spec,
    split_for,
)
from avlops.data.synth import corpus as synth_corpus
from avlops.data.synth import render as synth_render

N_CLIPS = 12
SEED = 35  # its first 12 clips cover every colour, shape, motion, sound, pitch and audio type (asserted below)


def _run(*args: str) -> int:
    return main(["data", "synth", *args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    assert _run("--out", str(out), "--clips", str(N_CLIPS), "--seed", str(SEED), "--workers", "2") == ExitCode.OK
    return out


@pytest.fixture(scope="module")
def records(corpus: Path) -> list[ClipRecord]:
    kept, problems = read_manifest(corpus / "manifest.jsonl")
    assert not problems
    return [k.record for k in kept]


# --- decoding helpers -----------------------------------------------------------------------------------------------
def decode_video(path: Path) -> np.ndarray:
    """``(T, H, W, 3)`` uint8."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]), rate


def shape_mask(frame: np.ndarray) -> np.ndarray:
    """Shape pixels: every named colour is saturated, the background is grey."""
    f = frame.astype(np.int16)
    return np.asarray((f.max(axis=-1) - f.min(axis=-1)) > 80)


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - rgb) ** 2)))


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(shape_mask(frame))
    return np.array([xs.mean(), ys.mean()])


def digest(folder: Path) -> dict[str, str]:
    files = [folder / "manifest.jsonl", *sorted((folder / "clips").iterdir())]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


# --- the command ----------------------------------------------------------------------------------------------------
def test_cli_writes_a_corpus_that_passes_the_contract_check(corpus: Path, records: list[ClipRecord]) -> None:
    assert len(records) == N_CLIPS
    assert sorted(p.name for p in (corpus / "clips").iterdir()) == [f"syn-{i:06d}.mp4" for i in range(N_CLIPS)]
    assert [p.name for p in corpus.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    report = check_manifest(corpus / "manifest.jsonl", progress=False)
    assert report.problems == []
    assert len(report.kept) == N_CLIPS
    for r in records:
        assert r.video == f"clips/{r.clip_id}.mp4"
        assert r.source == "synthetic"
        assert 2 <= len(r.captions) <= 3
        assert len(set(r.captions)) == len(r.captions)
    assert {r.audio_type for r in records} == {AudioType.VERBAL, AudioType.NONVERBAL, AudioType.MIXED}
    for key, values in [("colour", COLOURS), ("shape", SHAPES), ("motion", MOTIONS), ("pitch", PITCHES_HZ)]:
        assert {r.attributes.get(key) for r in records} >= set(values), key
    assert {r.attributes["sound"] for r in records} == {*SOUNDS, "none"}
    assert any(r.attributes["sound"] == "tone" and "word" in r.attributes for r in records)  # a tone under speech


def test_help_and_bad_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _run("--help") == ExitCode.OK
    assert "--clips" in capsys.readouterr().out
    assert _run("--out", str(tmp_path / "x"), "--clips", "0") == ExitCode.USAGE
    assert "clips" in capsys.readouterr().err
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  val_fraction: 0.5\n  test_fraction: 0.5\n", encoding="utf-8")
    assert _run("--params", str(params), "--out", str(tmp_path / "x")) == ExitCode.USAGE
    assert "leaves no training data" in capsys.readouterr().err
    params.write_text("synth:\n  colour: red\n", encoding="utf-8")
    assert _run("--params", str(params)) == ExitCode.USAGE
    assert not (tmp_path / "x").exists()


# --- decoded media agree with the ground truth ---------------------------------------------------------------------
def test_every_clip_decodes_with_the_configured_format(corpus: Path, records: list[ClipRecord]) -> None:
    cfg = SynthConfig()
    for r in records:
        frames = decode_video(corpus / str(r.video))
        assert frames.shape == (round(cfg.seconds * cfg.fps), cfg.size, cfg.size, 3)
        audio, rate = decode_audio(corpus / str(r.video))
        assert rate == cfg.sample_rate
        # AAC pads its last frame: at least the intended length, at most one 1024-sample frame more
        assert round(cfg.seconds * rate) <= audio.size <= round(cfg.seconds * rate) + 1024


def test_shape_colour_and_motion_match_the_attributes(corpus: Path, records: list[ClipRecord]) -> None:
    size = SynthConfig().size
    for r in records:
        frames = decode_video(corpus / str(r.video))
        mid = frames[len(frames) // 2]
        mask = shape_mask(mid)
        assert mask.sum() > 0.02 * size * size, r.clip_id
        assert nearest_colour(mid[mask].mean(axis=0)) == r.attributes["colour"], r.clip_id
        moved = centroid(frames[-1]) - centroid(frames[0])
        direction = np.array(MOTIONS[str(r.attributes["motion"])])
        assert moved @ direction > 0.25 * size, (r.clip_id, moved)  # travelled along the motion...
        assert abs(moved @ direction[::-1]) < 0.05 * size, (r.clip_id, moved)  # ...and not across it


def test_tone_pitch_is_the_dominant_frequency(corpus: Path, records: list[ClipRecord]) -> None:
    tones = [r for r in records if r.attributes["sound"] == "tone"]
    assert tones
    for r in tones:
        audio, rate = decode_audio(corpus / str(r.video))
        n = round(SynthConfig().seconds * rate)
        spectrum = np.abs(np.fft.rfft(audio[:n] * np.hanning(n)))
        peak_hz = float(np.fft.rfftfreq(n, 1 / rate)[int(np.argmax(spectrum))])
        assert peak_hz == pytest.approx(float(r.attributes["pitch_hz"]), rel=0.02), r.clip_id


def test_speech_is_audible_where_the_attributes_say(corpus: Path, records: list[ClipRecord]) -> None:
    speaking = [r for r in records if "word" in r.attributes]
    assert speaking
    for r in speaking:
        audio, rate = decode_audio(corpus / str(r.video))
        start = int(float(r.attributes["speech_start_s"]) * rate)
        stop = start + int(float(r.attributes["speech_s"]) * rate)
        rms_in = float(np.sqrt(np.mean(audio[start:stop] ** 2)))
        assert rms_in > 0.05, r.clip_id
        if r.audio_type is AudioType.VERBAL:  # nothing but the word: silence around it
            rest = np.concatenate([audio[: max(0, start - rate // 20)], audio[stop + rate // 20 : round(3 * rate)]])
            assert float(np.sqrt(np.mean(rest**2))) < 0.1 * rms_in, r.clip_id


def test_nonverbal_sounds_are_not_silent(corpus: Path, records: list[ClipRecord]) -> None:
    for r in records:
        if r.audio_type is AudioType.NONVERBAL:
            audio, _ = decode_audio(corpus / str(r.video))
            # clicks are sparse (4 ms each): check the peak as well as the energy
            assert float(np.abs(audio).max()) > 0.25 and float(np.sqrt(np.mean(audio**2))) > 0.004, r.clip_id


# --- captions and splits ---------------------------------------------------------------------------------------------
def _all_fact_specs() -> list[ClipSpec]:
    base = sample_spec(0, 0)
    audio = [(s, p, None) for s in SOUNDS for p in (PITCHES_HZ if s == "tone" else [None])]
    audio += [(None, None, w) for w in WORDS] + [(s, p, w) for s, p, _ in list(audio) for w in WORDS]
    return [
        dataclasses.replace(base, colour=c, shape=sh, motion=m, sound=s, pitch=p, word=w)
        for c, sh, m, (s, p, w) in itertools.product(COLOURS, SHAPES, MOTIONS, audio)
    ]


def test_captions_name_every_fact_and_never_describe_two_fact_combinations() -> None:
    owner: dict[str, str] = {}
    for spec in _all_fact_specs():
        caps = captions_for(spec)
        assert caps == captions_for(spec)  # a function of the facts alone
        assert 2 <= len(caps) <= 3 and len(set(caps)) == len(caps)
        for cap in caps:
            for fact in (spec.colour, spec.shape, spec.word, spec.pitch):
                assert fact is None or fact in cap, (fact, cap)
            assert owner.setdefault(cap, spec.fact_key) == spec.fact_key, cap


def test_every_spoken_digit_is_one_whole_token_of_the_tokenizer() -> None:
    """CLIP's BPE reads a single quote before t or s as a contraction ("'two'" -> "'t", "wo"): captions quote the
    word so that the decoder predicts each digit as one token of its own."""
    from avlops.preprocessing.text import get_tokenizer

    tok = get_tokenizer()
    for spec in _all_fact_specs():
        if spec.word is None or spec.colour != "red" or spec.motion != "up":  # every phrasing, fewer specs
            continue
        for cap in captions_for(spec):
            pieces = [tok.decoder[i] for i in tok.encode(cap)]
            assert f"{spec.word}</w>" in pieces, (cap, pieces)


def test_no_caption_or_fact_combination_in_two_splits(records: list[ClipRecord]) -> None:
    split_of: dict[str, str] = {}
    for r in records:
        for cap in r.captions:
            assert split_of.setdefault(cap, r.split.value) == r.split.value, cap
    # the same holds for a large corpus, computed without media; val/test get roughly their share of groups
    specs = [sample_spec(SEED, i) for i in range(3000)]
    group_split: dict[str, str] = {}
    for s in specs:
        split = split_for(s.fact_key, 0.1, 0.1).value
        assert group_split.setdefault(s.fact_key, split) == split
        for cap in captions_for(s):
            assert split_of.setdefault(cap, split) == split, cap
    share = {k: sum(v == k for v in group_split.values()) / len(group_split) for k in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.8, abs=0.04) and share["test"] == pytest.approx(0.1, abs=0.03)


# --- determinism and re-runs -----------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes_whatever_the_workers(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert _run("--out", str(again), "--clips", str(N_CLIPS), "--seed", str(SEED), "--workers", "1") == ExitCode.OK
    assert digest(again) == digest(corpus)


def test_other_seed_differs_and_a_rerun_replaces_the_corpus(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rerun"
    assert _run("--out", str(out), "--clips", str(N_CLIPS), "--seed", str(SEED), "--workers", "1") == ExitCode.OK
    (out / "keep.txt").write_text("not ours", encoding="utf-8")
    (out / ".synth-staging-killed" / "clips").mkdir(parents=True)  # what a killed run leaves
    assert _run("--out", str(out), "--clips", "4", "--seed", str(SEED + 1), "--workers", "1", "--no-progress") == 0
    summary = capsys.readouterr().out
    assert "manifest.jsonl: 4 clips" in summary and "clips/s" in summary and "audio types" in summary
    assert sorted(p.name for p in (out / "clips").iterdir()) == [f"syn-{i:06d}.mp4" for i in range(4)]
    assert (out / "keep.txt").exists()  # only clips/ and manifest.jsonl are replaced
    assert sorted(p.name for p in out.iterdir()) == ["clips", "keep.txt", "manifest.jsonl"]
    new, old = digest(out), digest(corpus)
    assert new["manifest.jsonl"] != old["manifest.jsonl"]
    assert all(new[f"syn-{i:06d}.mp4"] != old[f"syn-{i:06d}.mp4"] for i in range(4))
    assert len(read_manifest(out / "manifest.jsonl")[0]) == 4


def test_forkserver_pool_makes_the_same_clips_and_a_smaller_corpus_is_a_prefix(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a caller with other threads gets forkserver workers instead of fork: same bytes either way
    monkeypatch.setattr(synth_corpus, "_start_method", lambda: "forkserver")
    out = tmp_path / "prefix"
    assert _run("--out", str(out), "--clips", "4", "--seed", str(SEED), "--workers", "2") == ExitCode.OK
    small, big = digest(out), digest(corpus)
    assert all(small[f"syn-{i:06d}.mp4"] == big[f"syn-{i:06d}.mp4"] for i in range(4))
    big_lines = (corpus / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines() == big_lines[:4]


def test_missing_espeak_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(synth_render, "ESPEAK", "espeak-ng-not-installed")
    assert _run("--out", str(tmp_path / "x"), "--clips", "6", "--seed", str(SEED)) == ExitCode.INPUT
    assert "espeak-ng-not-installed not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

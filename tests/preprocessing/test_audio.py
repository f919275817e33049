"""Audio: PyAV decoding, fbank equal to a direct Kaldi call, VALOR slicing/normalisation, explicit no-audio mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from preprocessing_media import tone, write_video, write_wav
from torchaudio.compliance import kaldi

from avlops.data.media import SoundTrack, open_media
from avlops.preprocessing.audio import (
    FLOOR_DBFS,
    NoAudioError,
    audio_from_waveform,
    decode_audio,
    load_audio,
    loudness_dbfs,
    no_audio,
    slice_fbank,
    waveform_to_fbank,
)
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.sampling import clip_rng
from avlops.preprocessing.video import decode_frames


def valor_fbank(wave: torch.Tensor, sr: int) -> torch.Tensor:
    """VALOR AudioMapper's call on a mono waveform [1, S]."""
    wave = wave - wave.mean()
    return kaldi.fbank(
        wave,
        htk_compat=True,
        sample_frequency=sr,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=64,
        dither=0.0,
        frame_shift=10,
    )


def test_fbank_equals_a_direct_kaldi_call() -> None:
    cfg = PreprocessConfig()  # VALOR defaults: 22050 Hz, 64 mel, 25 ms / 10 ms
    wave = torch.from_numpy(tone(1.0, 22050, freq=300.0)) + 0.1  # [1, S] with a DC offset to remove
    ours = waveform_to_fbank(wave, 22050, cfg)
    assert ours.shape == (98, 64)  # 1 + (22050 - 551) // 220 frames
    torch.testing.assert_close(ours, valor_fbank(wave, 22050), rtol=0, atol=0)


def test_resampling_and_downmix_match_torchaudio_functional() -> None:
    cfg = PreprocessConfig()
    stereo = np.concatenate([tone(1.0, 16000, freq=300.0), tone(1.0, 16000, freq=500.0)])  # [2, S]
    mono = torch.from_numpy(stereo).mean(0, keepdim=True)
    ref = valor_fbank(torchaudio.functional.resample(mono, 16000, 22050), 22050)
    torch.testing.assert_close(waveform_to_fbank(stereo, 16000, cfg), ref, rtol=0, atol=0)


def test_slices_pad_like_valor_and_normalise() -> None:
    cfg = PreprocessConfig(target_length=100)
    fbank = torch.randn(200, 64)  # exactly two slices: VALOR still pads a third, all zeros
    out, mask = slice_fbank(fbank, 4, None, cfg)
    assert out.shape == (4, 64, 100) and mask == [True, True, True, False]
    norm = lambda x: (x + 4.2677393) / (2 * 4.5689974)  # noqa: E731
    torch.testing.assert_close(out[0], norm(fbank[:100].T))
    torch.testing.assert_close(out[1], norm(fbank[100:].T))
    torch.testing.assert_close(out[2], torch.full((64, 100), 4.2677393 / (2 * 4.5689974)))  # padding


def test_eval_picks_the_middle_slice() -> None:
    cfg = PreprocessConfig(target_length=20)
    fbank = torch.arange(190 * 64, dtype=torch.float64).view(190, 64)  # 190 frames → padded to 200 → 10 slices
    out, _ = slice_fbank(fbank, 2, None, cfg)
    first = out[:, 0, 0] * (2 * cfg.audio_std) + cfg.audio_mean  # each picked slice's first value
    assert first.round().tolist() == [2 * 20 * 64, 7 * 20 * 64]  # slices 2 and 7: (5 + 1) // 2 - 1 in each group


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2)])
def test_load_audio_from_a_video_track(tmp_path: Path, tiny_cfg: PreprocessConfig, rate: int, channels: int) -> None:
    path = write_video(tmp_path / "v.mp4", n_frames=16, fps=8, audio=(rate, channels))  # 2 s
    audio, info = load_audio(path, tiny_cfg, train=True, rng=clip_rng(0, "v"))
    assert audio.fbank.shape == (2, 64, 100) and audio.has_audio and audio.mask.all()
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.loudness_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.5)
    converted = rate != tiny_cfg.sample_rate
    assert any("resampled" in n for n in info.notes) == converted
    assert any("downmixed" in n for n in info.notes) == (channels == 2)


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2)])
def test_sound_track_from_the_video_pass_equals_a_fresh_decode(tmp_path: Path, rate: int, channels: int) -> None:
    # one open and one demuxing pass serve both streams; AAC at 44.1 kHz starts with a priming packet at a negative
    # timestamp that a seek back to 0 would skip, so the packets must come from the same pass, none dropped
    path = write_video(tmp_path / "v.mp4", n_frames=16, fps=8, audio=(rate, channels))
    sound = SoundTrack()
    with open_media(path, "video") as container:
        assert all(s.thread_count == 1 for s in container.streams)  # workers are the parallelism, not FFmpeg
        decode_frames(path, 4, None, container=container, sound=sound)
        assert sound.demuxed and sound.packets
        wave, sr = decode_audio(path, sound)
    fresh, fresh_sr = decode_audio(path)
    assert sr == fresh_sr == rate and wave.shape == fresh.shape == (channels, wave.shape[1])
    assert np.array_equal(wave, fresh)


def test_sound_track_of_a_video_without_audio(tmp_path: Path) -> None:
    path = write_video(tmp_path / "mute.mp4", audio=None)
    sound = SoundTrack()
    with open_media(path, "video") as container:
        decode_frames(path, 4, None, container=container, sound=sound)
        assert sound.demuxed and not sound.packets
        with pytest.raises(NoAudioError, match="no audio stream"):
            decode_audio(path, sound)


def test_serving_path_on_a_waveform_matches_the_file_path(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    path = write_wav(tmp_path / "a.wav", seconds=3.0, sample_rate=22050, channels=2)
    from_file, _ = load_audio(path, tiny_cfg, train=True, rng=clip_rng(1, "a"))
    wave, sr = decode_audio(path)
    assert wave.shape == (2, 3 * 22050) and sr == 22050
    from_wave = audio_from_waveform(wave, sr, tiny_cfg, train=True, rng=clip_rng(1, "a"))
    assert torch.equal(from_file.fbank, from_wave.fbank)


def test_no_audio_is_an_explicit_masked_zero(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    silent = no_audio(tiny_cfg, train=True)
    assert silent.fbank.shape == (2, 64, 100) and not silent.fbank.any()
    assert not silent.has_audio and not silent.mask.any()
    path = write_video(tmp_path / "mute.mp4", audio=None)
    with pytest.raises(NoAudioError, match="no audio stream"):
        load_audio(path, tiny_cfg, train=False, rng=None)
    with pytest.raises(NoAudioError, match="shorter than one"):
        audio_from_waveform(np.zeros(100, dtype=np.float32), 16000, tiny_cfg, train=False, rng=None)


def test_loudness() -> None:
    assert loudness_dbfs(np.ones((2, 10))) == 0.0
    assert loudness_dbfs(np.zeros((1, 10))) == FLOOR_DBFS
    assert loudness_dbfs(np.zeros((1, 0))) == FLOOR_DBFS
    assert loudness_dbfs(tone(1.0, 16000, amp=0.5)) == pytest.approx(-9.03, abs=0.01)


def test_loudness_does_not_depend_on_summation_order() -> None:
    """The stats table must not change with the machine: any order of the same samples gives the same value."""
    rng = np.random.default_rng(7)
    for n in (1_000, 160_000):
        x = (rng.standard_normal(n) * rng.uniform(0.01, 0.9)).astype(np.float32)
        want = round(20.0 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 6)
        assert loudness_dbfs(x) == want
        assert loudness_dbfs(rng.permutation(x)) == want and loudness_dbfs(x[::-1].copy()) == want

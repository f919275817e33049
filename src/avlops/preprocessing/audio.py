"""Audio → normalised log-mel fbank slices ``[A, mel, T]`` (VALOR ``AudioMapper``, paper §4.1).

Pipeline: downmix to mono, resample to the configured rate (``torchaudio`` sinc resampling), remove the mean, Kaldi
fbank (64 mel bins, 25 ms Hann window every 10 ms, ``htk_compat``, no dither, no energy), zero-pad the time axis to a
multiple of ``target_length`` frames (VALOR always adds 1..T frames), pick ``A`` slices with segment sampling, then
``(x - audio_mean) / (2 * audio_std)``. Decoding uses PyAV (``torchaudio.load`` would need torchcodec).

A clip without sound gets :func:`no_audio`: exact zeros with an all-False mask, so the placeholder is never taken
for a spectrogram (a real normalised fbank is never all zeros: padding normalises to ``-mean / 2std`` ≈ 0.47).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torchaudio.compliance import kaldi

from avlops.data.media import DECODE_ERRORS, MediaError, SoundTrack, decode_reason, open_media
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.sampling import draws, sampled_mask, segment_indices

__all__ = [
    "FLOOR_DBFS",
    "AudioInfo",
    "AudioTensor",
    "NoAudioError",
    "audio_from_waveform",
    "decode_audio",
    "load_audio",
    "loudness_dbfs",
    "no_audio",
    "slice_fbank",
    "waveform_to_fbank",
]

#: Loudness reported for silence or missing audio instead of -inf.
FLOOR_DBFS = -120.0


class NoAudioError(MediaError):
    """No usable sound: the file has no audio stream, or its stream is shorter than one analysis window."""


@dataclass(frozen=True)
class AudioTensor:
    fbank: torch.Tensor  # [A, mel, T] float32, normalised; exact zeros when there is no audio
    mask: torch.Tensor  # [A] bool: False for a slice that repeats the last one to reach A, all False without audio

    @property
    def has_audio(self) -> bool:
        return bool(self.mask.any())


@dataclass(frozen=True)
class AudioInfo:
    """Facts about the source, for the statistics table; ``notes`` say what was converted."""

    sample_rate: int  # native
    channels: int  # native
    duration_s: float
    loudness_dbfs: float
    notes: tuple[str, ...] = ()


def loudness_dbfs(waveform: np.ndarray | torch.Tensor) -> float:
    """RMS level of all samples in dBFS (full scale = 1.0), floored at :data:`FLOOR_DBFS`, to 1e-6 dB.

    Summed in float64 and rounded, so the value (and the stats table and shard records holding it) is the same on
    every machine: a float32 BLAS dot changes its last digits with the CPU's vector width and thread count.
    """
    x = np.ascontiguousarray(waveform, dtype=np.float32).ravel()
    if x.size == 0:
        return FLOOR_DBFS
    energy = float(np.einsum("i,i->", x, x, dtype=np.float64))  # float64 accumulation, no float64 copy
    rms = math.sqrt(energy / x.size)
    return round(max(FLOOR_DBFS, 20.0 * math.log10(rms)), 6) if rms > 0 else FLOOR_DBFS


@lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # The module keeps the sinc kernel that torchaudio.functional.resample rebuilds on every call (~0.45 s for
    # 16 kHz → 22.05 kHz). Built in float32 like the functional form, its output is bit-identical to it.
    return torchaudio.transforms.Resample(orig, new, dtype=torch.float32)


def waveform_to_fbank(waveform: np.ndarray | torch.Tensor, sample_rate: int, cfg: PreprocessConfig) -> torch.Tensor:
    """Waveform ``[C, S]`` or ``[S]`` (floats in [-1, 1]) at ``sample_rate`` → Kaldi log-mel fbank ``[F, mel]``.

    Raises :class:`NoAudioError` when the clip is shorter than one analysis window.
    """
    x = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, torch.Tensor) else waveform)
    x = x.to(torch.float32)
    if x.ndim == 1:
        x = x[None]  # [1, S]
    if x.ndim != 2:
        raise ValueError(f"expected a waveform [C, S] or [S], got shape {tuple(x.shape)}")
    mono = x.mean(dim=0, keepdim=True)  # [1, S]
    if sample_rate != cfg.sample_rate:
        mono = _resampler(sample_rate, cfg.sample_rate)(mono)  # [1, S * new / orig]
    window = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    if mono.shape[1] < window:
        raise NoAudioError(
            f"audio has {mono.shape[1]} samples at {cfg.sample_rate} Hz, "
            f"shorter than one {cfg.frame_length_ms} ms analysis window"
        )
    mono = mono - mono.mean()
    fbank: torch.Tensor = kaldi.fbank(
        mono,
        htk_compat=True,
        sample_frequency=cfg.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=cfg.num_mel_bins,
        dither=0.0,
        frame_shift=cfg.frame_shift_ms,
        frame_length=cfg.frame_length_ms,
    )  # [F, mel]
    return fbank


def slice_fbank(
    fbank: torch.Tensor, n_slices: int, u: np.ndarray | None, cfg: PreprocessConfig
) -> tuple[torch.Tensor, list[bool]]:
    """Pad ``[F, mel]`` to whole ``T``-frame slices, pick ``n_slices`` of them, normalise → ``[A, mel, T]``, mask."""
    t = cfg.target_length
    pad = t - fbank.shape[0] % t  # VALOR always pads, 1..T frames
    padded = F.pad(fbank, (0, 0, 0, pad))  # [F + pad, mel]
    total = padded.shape[0] // t
    idx = segment_indices(total, n_slices, u)
    out = torch.stack([padded[i * t : (i + 1) * t] for i in idx])  # [A, T, mel]
    out = out.permute(0, 2, 1)  # [A, mel, T]
    out = (out - cfg.audio_mean) / (2.0 * cfg.audio_std)
    return out.contiguous(), sampled_mask(total, n_slices)


def audio_from_waveform(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    cfg: PreprocessConfig,
    train: bool,
    rng: np.random.Generator | None,
) -> AudioTensor:
    """The full audio transform on a decoded waveform ``[C, S]`` or ``[S]``; usable one request at a time."""
    n = cfg.n_audio_slices(train)
    fbank = waveform_to_fbank(waveform, sample_rate, cfg)
    feats, mask = slice_fbank(fbank, n, draws(n, train, rng), cfg)
    return AudioTensor(fbank=feats, mask=torch.tensor(mask))


def no_audio(cfg: PreprocessConfig, train: bool) -> AudioTensor:
    """Placeholder for a clip without sound: zeros ``[A, mel, T]`` with an all-False mask."""
    n = cfg.n_audio_slices(train)
    return AudioTensor(fbank=torch.zeros(n, cfg.num_mel_bins, cfg.target_length), mask=torch.zeros(n, dtype=torch.bool))


def _waveform(frames: Iterable[av.AudioFrame]) -> np.ndarray:
    """Decoded audio frames → float32 ``[C, S]`` (zero columns when there are none).

    Planar float frames (what AAC, MP3 and Opus decoders give) are queued as they are in an ``AudioFifo`` and read
    back as one block; other sample formats are converted to planar float at their native layout and rate first.
    """
    resampler: av.AudioResampler | None = None
    fifo = av.AudioFifo()
    for frame in frames:
        if frame.format.name == "fltp":
            converted: Iterable[av.AudioFrame] = (frame,)
        else:
            resampler = resampler or av.AudioResampler(format="fltp")
            converted = resampler.resample(frame)
        for f in converted:
            f.pts = None  # timestamps play no part in the waveform; a gap in them must not stop the read
            fifo.write(f)
    if resampler is not None:
        for f in resampler.resample(None):
            f.pts = None
            fifo.write(f)
    block = fifo.read()  # every queued sample, or None
    if block is None:
        return np.zeros((1, 0), np.float32)
    return block.to_ndarray().astype(np.float32, copy=False)  # [C, S]


def decode_audio(path: Path, sound: SoundTrack | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` → float32 waveform ``[C, S]`` in [-1, 1] and its native rate.

    ``sound``: that stream's packets, already demuxed from the open file while its video was decoded (see
    :func:`~avlops.preprocessing.video.decode_frames`); without it (or before its pass) the file is opened here.
    Raises :class:`NoAudioError` when there is no audio stream or it holds no samples, :class:`MediaError` when it
    cannot be decoded.
    """
    try:
        if sound is not None and sound.demuxed:
            if not sound.packets:
                raise NoAudioError(f"{path.name}: no audio stream")
            stream = sound.packets[0].stream
            rate = int(stream.codec_context.sample_rate or 0)
            wave = _waveform(f for p in sound.packets for f in stream.decode(p))
        else:
            with open_media(path, "audio") as container:
                if not container.streams.audio:
                    raise NoAudioError(f"{path.name}: no audio stream")
                stream = container.streams.audio[0]
                rate = int(stream.codec_context.sample_rate or 0)
                wave = _waveform(container.decode(stream))
    except MediaError:
        raise
    except DECODE_ERRORS as err:
        raise MediaError(f"{path.name}: cannot decode audio: {decode_reason(err)}") from None
    if wave.shape[1] == 0 or rate <= 0:
        raise NoAudioError(f"{path.name}: audio stream is empty")
    return wave, rate


def load_audio(
    path: Path,
    cfg: PreprocessConfig,
    train: bool,
    rng: np.random.Generator | None,
    *,
    sound: SoundTrack | None = None,
) -> tuple[AudioTensor, AudioInfo]:
    """Decode and transform the audio of ``path`` (from ``sound``'s packets when given, see :func:`decode_audio`); a
    rate or channel count other than the target is converted and noted (not refused)."""
    wave, rate = decode_audio(path, sound)
    channels = wave.shape[0]
    notes = []
    if rate != cfg.sample_rate:
        notes.append(f"audio resampled {rate} -> {cfg.sample_rate} Hz")
    if channels != 1:
        notes.append(f"audio downmixed {channels} -> 1 channels")
    info = AudioInfo(
        sample_rate=rate,
        channels=channels,
        duration_s=wave.shape[1] / rate,
        loudness_dbfs=loudness_dbfs(wave),
        notes=tuple(notes),
    )
    try:
        return audio_from_waveform(wave, rate, cfg, train, rng), info
    except NoAudioError as err:
        raise NoAudioError(f"{path.name}: {err}") from None

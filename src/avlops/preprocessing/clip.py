"""Preprocess one clip: a manifest record (:func:`preprocess_clip`) or decoded inputs (:func:`preprocess_arrays`).

:func:`preprocess_clip` is the per-clip transform of a manifest record; :func:`preprocess_arrays` is its twin for
already-decoded inputs (a serving request): frames, waveform and captions in, the same per-clip tensors a shard holds
out. Both are built from the same per-modality functions (``video_from_frames`` / ``load_video``,
``audio_from_waveform`` / ``load_audio``, ``tokenize``), so training and serving see the same tensors. The dataset
run (:mod:`avlops.preprocessing.run`) calls :func:`preprocess_clip` for every clip of a manifest.

Bad-input policy (each raises :class:`ClipError` with every reason, and the run quarantines the clip): a media path
that leaves the dataset root (checked before anything is opened), a missing, empty, corrupt or truncated file, a
zero-length video, a video with no audio track (or a still image) while ``audio_type`` claims sound and no audio file
is given, an audio file without usable sound. Not refused but *noted* in the clip's statistics: audio at another
sample rate or channel count (resampled and downmixed, as VALOR's ffmpeg extraction does), captions cut to the
context length, and an empty or missing sound track when ``audio_type`` is ``unknown`` (the clip keeps
``has_audio=False``).
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avlops.data.media import MediaError, SoundTrack, open_media
from avlops.data.schema import AudioType, ClipRecord, MediaPathError, Split, resolve_media
from avlops.data.stats import ClipStats
from avlops.preprocessing.audio import (
    FLOOR_DBFS,
    AudioInfo,
    AudioTensor,
    NoAudioError,
    audio_from_waveform,
    load_audio,
    no_audio,
)
from avlops.preprocessing.params import PreprocessConfig, SamplingMode
from avlops.preprocessing.text import TextTensor, tokenize
from avlops.preprocessing.video import VideoInfo, VideoTensor, empty_video, load_video, video_from_frames

__all__ = ["ClipError", "ClipTensors", "is_train", "preprocess_arrays", "preprocess_clip"]


class ClipError(ValueError):
    """A clip that cannot be preprocessed; ``reasons`` lists every problem found."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


@dataclass(frozen=True)
class ClipTensors:
    """Everything the model needs from one clip, plus its statistics row."""

    clip_id: str
    video: VideoTensor  # pixels [N, 3, R, R], mask [N]
    audio: AudioTensor  # fbank [A, mel, T], mask [A]
    text: TextTensor  # tokens [n_captions, ctx]
    stats: ClipStats

    def tensors(self) -> dict[str, torch.Tensor]:
        """The per-clip tensors a shard stacks (see :mod:`avlops.preprocessing.shards`)."""
        return {
            "video": self.video.pixels,
            "video_mask": self.video.mask,
            "has_video": torch.tensor(self.stats.has_video),
            "audio": self.audio.fbank,
            "audio_mask": self.audio.mask,
            "has_audio": torch.tensor(self.audio.has_audio),
            "text": self.text.tokens,
        }


def is_train(cfg: PreprocessConfig, split: Split | str) -> bool:
    """Whether clips of ``split`` get training-style (random) sampling under ``cfg.sampling``."""
    if cfg.sampling is SamplingMode.BY_SPLIT:
        return Split(split) is Split.TRAIN
    return cfg.sampling is SamplingMode.TRAIN


def _existing(root: Path, kind: str, rel: str, reasons: list[str]) -> Path | None:
    """Resolve ``rel`` under ``root`` (refusing escapes before any file access) and check it is a non-empty file."""
    try:
        path = resolve_media(root, rel)
    except MediaPathError as err:
        reasons.append(f"{kind}: {err}")
        return None
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        reasons.append(f"{kind}: {rel}: file not found")
        return None
    if st.st_size == 0:
        reasons.append(f"{kind}: {rel}: file is empty (zero-length)")
        return None
    return path


def preprocess_clip(
    record: ClipRecord, root: Path, cfg: PreprocessConfig, train: bool, rng: np.random.Generator | None
) -> ClipTensors:
    """Decode and transform one clip whose media paths are relative to ``root``.

    ``train`` selects random (``rng``) or middle frame/slice picks. Raises :class:`ClipError` with every reason when
    the clip cannot be used (see the module docstring for the policy).
    """
    reasons: list[str] = []
    paths = {k: _existing(root, k, rel, reasons) for k in ("video", "audio") if (rel := getattr(record, k))}
    if reasons:
        raise ClipError(reasons)
    notes: list[str] = []
    claims_sound = record.audio_type is not AudioType.UNKNOWN

    video: VideoTensor | None = None
    vinfo: VideoInfo | None = None
    audio: AudioTensor | None = None
    ainfo: AudioInfo | None = None
    vpath, apath = paths.get("video"), paths.get("audio")
    with ExitStack() as media:
        # the video's own sound track comes from the same open container, on the same demuxing pass
        sound = SoundTrack() if vpath is not None and apath is None and not record.is_still_image else None
        if vpath is not None:
            try:
                container = media.enter_context(open_media(vpath, "video"))
                video, vinfo = load_video(
                    vpath, cfg, train, rng, still=record.is_still_image, container=container, sound=sound
                )
            except MediaError as err:
                reasons.append(f"video: {err}")

        if apath is not None:
            try:
                audio, ainfo = load_audio(apath, cfg, train, rng)
            except MediaError as err:
                reasons.append(f"audio: {err}")
        elif vpath is not None and vinfo is not None and not record.is_still_image:
            try:
                audio, ainfo = load_audio(vpath, cfg, train, rng, sound=sound)
            except NoAudioError as err:
                if claims_sound:
                    reasons.append(f"audio_type is {record.audio_type.value!r} but {err} and no audio file is given")
                else:
                    notes.append(f"no sound: {err}")
            except MediaError as err:
                reasons.append(f"audio track: {err}")
        elif vinfo is not None and claims_sound:
            reasons.append(
                f"audio_type is {record.audio_type.value!r} but the still image has no sound and no audio file"
            )
    if reasons:
        raise ClipError(reasons)
    video = video if video is not None else empty_video(cfg, train)  # placeholders only when needed
    audio = audio if audio is not None else no_audio(cfg, train)

    text = tokenize(record.captions, cfg.context_length)
    if text.truncated:
        notes.append(f"{text.truncated} caption(s) cut to {cfg.context_length} tokens")
    stats = _stats(record, vinfo, ainfo, audio.has_audio, [*(ainfo.notes if ainfo else ()), *notes])
    return ClipTensors(clip_id=record.clip_id, video=video, audio=audio, text=text, stats=stats)


def preprocess_arrays(
    cfg: PreprocessConfig,
    *,
    frames: np.ndarray | None = None,
    waveform: np.ndarray | torch.Tensor | None = None,
    sample_rate: int | None = None,
    captions: Sequence[str] = (),
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Decoded inputs → the per-clip tensors a shard holds (``video``, ``video_mask``, ``has_video``, ``audio``,
    ``audio_mask``, ``has_audio``, ``text``), for serving one request at a time.

    ``frames`` are all of a clip's RGB frames ``[T, H, W, 3]`` uint8 (one image: ``[H, W, 3]``), ``waveform`` is
    ``[C, S]`` or ``[S]`` floats at ``sample_rate``. A missing or too-short input gives the masked placeholder,
    exactly as a clip without that modality gets in a shard.
    """
    video = empty_video(cfg, train) if frames is None else video_from_frames(frames, cfg, train, rng)
    audio = no_audio(cfg, train)
    if waveform is not None:
        if sample_rate is None:
            raise ValueError("a waveform needs its sample_rate")
        with suppress(NoAudioError):
            audio = audio_from_waveform(waveform, sample_rate, cfg, train, rng)
    text = tokenize(list(captions), cfg.context_length).tokens
    return {
        "video": video.pixels,
        "video_mask": video.mask,
        "has_video": torch.tensor(frames is not None),
        "audio": audio.fbank,
        "audio_mask": audio.mask,
        "has_audio": torch.tensor(audio.has_audio),
        "text": text,
    }


def _stats(
    record: ClipRecord, v: VideoInfo | None, a: AudioInfo | None, has_audio: bool, notes: list[str]
) -> ClipStats:
    duration = 0.0
    if v is not None and v.fps is not None:  # a real video: its own duration
        duration = v.duration_s
    elif a is not None:  # audio-only clip, or a still with sound
        duration = a.duration_s
    return ClipStats(
        clip_id=record.clip_id,
        split=record.split.value,
        source=record.source,
        audio_type=record.audio_type.value,
        duration_s=float(duration),
        frame_count=v.frame_count if v else 0,
        fps=v.fps if v else None,
        sample_rate=a.sample_rate if a else None,
        channels=a.channels if a else None,
        has_audio=has_audio,
        has_video=v is not None,
        loudness_dbfs=a.loudness_dbfs if a else FLOOR_DBFS,
        caption_count=len(record.captions),
        caption_chars_max=max(len(c) for c in record.captions),
        width=v.width if v else None,
        height=v.height if v else None,
        notes="; ".join(notes),
    )

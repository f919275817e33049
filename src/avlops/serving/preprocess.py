"""Preprocessing handlers: raw requests → model inputs, through the same library functions as the training data.

* :class:`TextPreprocess` (:mod:`avlops.serving.text`, torch-free): UTF-8 text → CLIP BPE ids at the model's context.
* :class:`MediaPreprocess`: an encoded clip (mp4, webm, a wav, a still image, ...) → frames and fbank slices through
  ``avlops.preprocessing.clip.preprocess_clip``, the very function that wrote the training shards, with its
  bad-input policy (undecodable, truncated or zero-length media, a claimed sound track that is missing).
* :class:`ArrayPreprocess`: decoded RGB frames and a waveform → the same tensors through ``preprocess_arrays``.
* :class:`ClipPreprocess` (the served ``clip_preprocess``): either of the two above per request, in one process.

Every limit of :class:`~avlops.serving.params.ServingLimits` is checked before decoding starts, so a 10-minute clip or
a huge upload costs a header read, not a decode. Evaluation-style sampling (middle frames and slices), as the
catalogue and the evaluation use.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from avlops.data.media import MediaError, probe
from avlops.data.schema import AudioType, ClipRecord, MediaPathError, Split
from avlops.models.vla import audio_type_weight
from avlops.preprocessing.clip import ClipError, preprocess_arrays, preprocess_clip
from avlops.preprocessing.params import PreprocessConfig
from avlops.serving.contract import ARRAY_INPUTS, MEDIA_INPUTS, ModelSpec, Tensors
from avlops.serving.contract import input_set as part
from avlops.serving.handler import Arrays, Handler, InputError, Outcome, text_items
from avlops.serving.params import ServingLimits
from avlops.serving.text import TextPreprocess, clean_text

__all__ = [
    "ArrayPreprocess",
    "ClipPreprocess",
    "MediaPreprocess",
    "TextPreprocess",
    "clean_text",
    "part",
    "type_weights",
]

_T = Tensors
# /dev/shm keeps request media in memory; the library's decoders read paths
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def type_weights(array: np.ndarray) -> np.ndarray:
    """audio_type [B, n] (UTF-8; empty = unknown) -> CLIP4VLA type-token weights [B] float32."""
    weights = []
    for name in text_items(array, "audio_type"):
        try:
            weights.append(audio_type_weight(name or AudioType.UNKNOWN.value))
        except ValueError as err:
            raise InputError(str(err)) from None
    return np.asarray(weights, dtype=np.float32)


def _clip_outputs(items: Sequence[dict[str, torch.Tensor]], weights: np.ndarray) -> Arrays:
    """Per-clip tensors (a shard's names) -> the contract's batched outputs."""

    def batch(key: str) -> np.ndarray:
        return torch.stack([it[key] for it in items]).numpy()

    return {
        _T.FRAMES: batch("video").astype(np.float32, copy=False),
        _T.VIDEO_MASK: batch("video_mask").astype(np.bool_, copy=False),
        _T.FBANK: batch("audio").astype(np.float32, copy=False),
        _T.AUDIO_MASK: batch("audio_mask").astype(np.bool_, copy=False),
        _T.TYPE_WEIGHT: weights.reshape(-1),  # the contract's reshape: one scalar per item
    }


class MediaPreprocess(Handler):
    """Encoded clips: each is written to a private scratch folder and preprocessed like a manifest record."""

    def __init__(self, spec: ModelSpec, cfg: PreprocessConfig, limits: ServingLimits) -> None:
        super().__init__(spec)
        self.cfg = cfg
        self.limits = limits

    def check(self, request: Arrays) -> None:
        type_weights(request[_T.AUDIO_TYPE])
        media = request[_T.MEDIA]
        if media.shape[0] != 1:
            raise InputError("send one encoded clip per request (media [1, n])")
        size = media.shape[1]
        if size == 0:
            raise InputError("media is empty")
        if size > self.limits.max_media_bytes:
            raise InputError(f"media has {size} bytes (limit {self.limits.max_media_bytes})")

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        out = []
        for request in requests:
            weights = type_weights(request[_T.AUDIO_TYPE])
            types = text_items(request[_T.AUDIO_TYPE], "audio_type")
            items = [self._clip(request[_T.MEDIA].tobytes(), types[0] or "unknown")]
            out.append(_clip_outputs(items, weights))
        return out

    def _clip(self, data: bytes, audio_type: str) -> dict[str, torch.Tensor]:
        with tempfile.TemporaryDirectory(prefix="avlops-media-", dir=_SCRATCH) as tmp:
            root = Path(tmp)
            path = root / "media"
            path.write_bytes(data)
            try:
                info = probe(path, decode=False)
            except MediaError as err:
                raise InputError(f"media cannot be decoded: {_strip(err, root)}") from None
            if info.duration_s is not None and info.duration_s > self.limits.max_media_seconds:
                raise InputError(f"media lasts {info.duration_s:.1f} s (limit {self.limits.max_media_seconds:g} s)")
            # the record's file name tells the pipeline what it is: a still image, an audio file or a video
            if info.has_video:
                still = info.fps is None or (info.duration_s or 0.0) == 0.0
                name, key = ("media.png" if still else "media.mp4"), "video"
            else:
                name, key = "media.audio", "audio"  # FFmpeg probes the content, not the name
            path.rename(root / name)
            try:
                record = ClipRecord(
                    clip_id="request",
                    captions=["request"],
                    audio_type=AudioType(audio_type),
                    split=Split.TEST,
                    source="request",
                    **{key: name},
                )
                clip = preprocess_clip(record, root, self.cfg, train=False, rng=None)
            except (ClipError, MediaError, MediaPathError) as err:
                raise InputError(f"media cannot be used: {_strip(err, root)}") from None
        return clip.tensors()


def _strip(err: Exception, root: Path) -> str:
    """The error message without the scratch folder's path."""
    return str(err).replace(f"{root}/", "").replace(str(root), "")


class ArrayPreprocess(Handler):
    """Decoded clips: all RGB frames [T, H, W, 3] uint8 and a mono waveform at ``sample_rate``.

    A waveform shorter than one 25 ms analysis window (one sample will do) means "no sound": the clip gets the masked
    placeholder, as a silent clip does in a shard.
    """

    def __init__(self, spec: ModelSpec, cfg: PreprocessConfig, limits: ServingLimits) -> None:
        super().__init__(spec)
        self.cfg = cfg
        self.limits = limits

    def check(self, request: Arrays) -> None:
        type_weights(request[_T.AUDIO_TYPE])
        frames, wave, rates = request[_T.RAW_FRAMES], request[_T.WAVEFORM], request[_T.SAMPLE_RATE]
        lim = self.limits
        t, h, w = frames.shape[1:4]
        if t < 1 or t > lim.max_raw_frames:
            raise InputError(f"raw_frames holds {t} frames (1 to {lim.max_raw_frames} allowed)")
        if min(h, w) < 1 or max(h, w) > lim.max_frame_side:
            raise InputError(f"raw_frames are {h}x{w} px (sides 1 to {lim.max_frame_side} allowed)")
        for rate in rates.reshape(-1):
            if not 1000 <= int(rate) <= 384_000:
                raise InputError(f"sample_rate {int(rate)} Hz is outside 1000..384000")
            seconds = wave.shape[1] / int(rate)
            if seconds > lim.max_media_seconds:
                raise InputError(f"waveform lasts {seconds:.1f} s (limit {lim.max_media_seconds:g} s)")
        if not np.isfinite(wave).all():
            raise InputError("waveform holds NaN or infinite samples")

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        out = []
        for request in requests:
            rates = request[_T.SAMPLE_RATE].reshape(-1)
            items = [
                preprocess_arrays(self.cfg, frames=frames, waveform=wave, sample_rate=int(rate))
                for frames, wave, rate in zip(request[_T.RAW_FRAMES], request[_T.WAVEFORM], rates, strict=True)
            ]
            out.append(_clip_outputs(items, type_weights(request[_T.AUDIO_TYPE])))
        return out


class ClipPreprocess(Handler):
    """``clip_preprocess``: an encoded clip (``media``, :class:`MediaPreprocess`) or a decoded one (``raw_frames``,
    ``waveform``, ``sample_rate``, :class:`ArrayPreprocess`) per request. One model for both, so the server has one
    process importing torch, torchaudio and PyAV for clips instead of two (~0.55 GB each; bench/results/startup.md)."""

    def __init__(self, spec: ModelSpec, cfg: PreprocessConfig, limits: ServingLimits) -> None:
        super().__init__(spec)
        self.media = MediaPreprocess(part(spec, MEDIA_INPUTS), cfg, limits)
        self.arrays = ArrayPreprocess(part(spec, ARRAY_INPUTS), cfg, limits)

    def _part(self, request: Arrays) -> Handler:
        has_media = _T.MEDIA in request
        has_arrays = any(n in request for n in ARRAY_INPUTS if n != _T.AUDIO_TYPE)
        if has_media == has_arrays:
            raise InputError(
                f"{self.spec.name}: send either media (an encoded clip) or raw_frames, waveform and sample_rate"
            )
        return self.media if has_media else self.arrays

    def handle(self, requests: Sequence[Arrays]) -> list[Outcome]:
        """Each request answered by the part its inputs choose (each part checks its own contract)."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        groups: dict[int, tuple[Handler, list[int]]] = {}
        for i, request in enumerate(requests):
            try:
                handler = self._part(request)
            except InputError as err:
                outcomes[i] = err
                continue
            groups.setdefault(id(handler), (handler, []))[1].append(i)
        for handler, rows in groups.values():
            for i, outcome in zip(rows, handler.handle([requests[i] for i in rows]), strict=True):
                outcomes[i] = outcome
        return [o if o is not None else InputError("not answered") for o in outcomes]

    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        return [self._part(r).run([r])[0] for r in requests]

"""Video frames → CLIP-normalised tensors ``[N, 3, R, R]`` (VALOR ``VideoMapper``, evaluation transform).

Decoding uses PyAV. N frames are picked with VALOR's segment sampling (:mod:`avlops.preprocessing.sampling`); only
the picked frames are converted to RGB. Each frame is resized so its shorter side is R (bilinear, antialiased, on the
uint8 pixels: torchvision's ``Resize(R)`` on a uint8 image, within one grey level of resizing [0, 1] floats and ~10×
faster), centre-cropped to R×R and normalised with the configured mean/std. A still image is a one-frame clip
repeated to N. Serving calls :func:`video_from_frames` with decoded frames; datasets call :func:`load_video` with a
path: both end in the same :func:`frames_to_tensor`.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.audio.stream import AudioStream
from av.video.reformatter import VideoReformatter

from avlops.data.media import DECODE_ERRORS, MediaError, SoundTrack, decode_reason, open_media
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.sampling import draws, sampled_mask, segment_indices

__all__ = [
    "TRUNCATION_TOLERANCE",
    "VideoInfo",
    "VideoTensor",
    "decode_frames",
    "empty_video",
    "frames_to_tensor",
    "load_video",
    "video_from_frames",
]

#: A video that decodes fewer than this fraction of the frames its container declares is treated as truncated.
TRUNCATION_TOLERANCE = 0.9


@dataclass(frozen=True)
class VideoTensor:
    pixels: torch.Tensor  # [N, 3, R, R] float32, normalised; zeros when there is no video
    mask: torch.Tensor  # [N] bool: False where a frame only repeats the last one to reach N (or no video)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about the source, for the statistics table."""

    frame_count: int  # frames decoded from the file (1 for a still image)
    width: int
    height: int
    fps: float | None  # None for a still image
    duration_s: float


def frames_to_tensor(frames: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """RGB ``uint8`` frames ``[T, H, W, 3]`` (or one ``[H, W, 3]``) → normalised ``[T, 3, R, R]`` float32."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    r = cfg.resolution
    # [T, H, W, 3] → [T, 3, H, W] view in channels-last memory: the layout of torch's fast uint8 resize kernel
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    if short != r:
        new_long = int(r * long / short)  # torchvision Resize(int) rule
        size = (r, new_long) if h <= w else (new_long, r)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)  # [T, 3, H', W'] uint8
    h, w = x.shape[-2:]
    top, left = round((h - r) / 2.0), round((w - r) / 2.0)  # torchvision center_crop offsets
    x = x[:, :, top : top + r, left : left + r]  # [T, 3, R, R] view
    out = x.to(torch.float32, memory_format=torch.contiguous_format)  # [T, 3, R, R], one copy
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)  # (x / 255 - mean) / std


def video_from_frames(
    frames: np.ndarray, cfg: PreprocessConfig, train: bool, rng: np.random.Generator | None
) -> VideoTensor:
    """Sample N of the decoded frames ``[T, H, W, 3]`` (all of a clip, in order) and normalise them."""
    if frames.ndim == 3:
        frames = frames[None]
    n = cfg.n_frames(train)
    if frames.shape[0] < 1:
        raise ValueError("no frames")
    idx = segment_indices(frames.shape[0], n, draws(n, train, rng))
    return VideoTensor(pixels=frames_to_tensor(frames[idx], cfg), mask=torch.tensor(sampled_mask(frames.shape[0], n)))


def empty_video(cfg: PreprocessConfig, train: bool) -> VideoTensor:
    """Placeholder for a clip without video: zeros with an all-False mask (never mistaken for frames)."""
    n, r = cfg.n_frames(train), cfg.resolution
    return VideoTensor(pixels=torch.zeros(n, 3, r, r), mask=torch.zeros(n, dtype=torch.bool))


_local = threading.local()


def _forget_reformatter() -> None:
    _local.__dict__.pop("reformatter", None)


os.register_at_fork(after_in_child=_forget_reformatter)  # each process builds its own swscale context


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """``frame`` as RGB ``[H, W, 3]`` uint8 through one reformatter per thread.

    ``frame.to_ndarray`` builds a new swscale context, with its own thread pool, for every frame (~1 ms); one
    single-threaded context per thread is reused instead. Single-threaded also keeps it safe across ``fork``: a
    forked worker never inherits a context whose helper threads do not exist in it.
    """
    fmt = getattr(_local, "reformatter", None)
    if fmt is None:
        fmt = _local.reformatter = VideoReformatter()
    return fmt.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _count_packets(path: Path) -> int:
    with open_media(path, "video") as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def _decode_picked(
    container: av.container.InputContainer, wanted: set[int], sound: SoundTrack | None = None
) -> tuple[dict[int, np.ndarray], int]:
    """Decode every frame of the first video stream, converting only ``wanted`` ones; returns them and the count.

    With ``sound``, the packets of the first audio stream (its end-of-stream packet included) are kept there from the
    same pass, undecoded.
    """
    vstream = container.streams.video[0]
    astream = container.streams.audio[0] if sound is not None and container.streams.audio else None
    picked: dict[int, np.ndarray] = {}
    n = 0
    for packet in container.demux(*(s for s in (vstream, astream) if s is not None)):
        if sound is not None and packet.stream.index != vstream.index:  # (a flush packet's stream_index is 0)
            sound.packets.append(cast("av.Packet[AudioStream]", packet))
            continue
        for frame in vstream.decode(packet):
            if n in wanted:
                picked[n] = _rgb(frame)
            n += 1
    if sound is not None:
        sound.demuxed = True
    return picked, n


def _decode_picked_path(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    with open_media(path, "video") as container:
        return _decode_picked(container, wanted)


def decode_frames(
    path: Path,
    n_samples: int,
    u: np.ndarray | None,
    *,
    still: bool = False,
    container: av.container.InputContainer | None = None,
    sound: SoundTrack | None = None,
) -> tuple[np.ndarray, list[bool], VideoInfo]:
    """Decode ``path`` and return the sampled RGB frames ``[n_samples, H, W, 3]``, their mask and the source facts.

    ``u`` are the training draws (None: middle frames). ``container``: ``path`` already opened with
    :func:`~avlops.data.media.open_media` and not yet read; with it, ``sound`` (a new :class:`SoundTrack`) receives
    the first audio stream's packets from the same demuxing pass, for :func:`~avlops.preprocessing.audio.decode_audio`.
    Raises :class:`MediaError` for a file that cannot be opened or decoded, has no video stream, yields no frame,
    or yields far fewer frames than it declares (truncated).
    """
    try:
        picked: dict[int, np.ndarray] = {}
        count = 0
        with nullcontext(container) if container is not None else open_media(path, "video") as source:
            if not source.streams.video:
                raise MediaError(f"{path.name}: no video stream")
            stream = source.streams.video[0]
            declared = 1 if still else int(stream.frames or 0)
            fps = None if still or not stream.average_rate else float(stream.average_rate)
            width, height = stream.codec_context.width, stream.codec_context.height
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif source.duration:
                duration = source.duration / av.time_base
            else:
                duration = 0.0
            if declared > 0:  # the usual case: pick on the declared count and decode in one pass
                idx = segment_indices(declared, n_samples, u)
                picked, count = _decode_picked(source, set(idx), sound if container is not None else None)
        if declared <= 0:  # no frame count in the container (e.g. mkv/webm): count packets first, no decoding
            declared = _count_packets(path)
            if declared <= 0:
                raise MediaError(f"{path.name}: zero-length video (no frames)")
            idx = segment_indices(declared, n_samples, u)
            picked, count = _decode_picked_path(path, set(idx))
        if count == 0:
            raise MediaError(f"{path.name}: zero-length video (no decodable frame)")
        if count < TRUNCATION_TOLERANCE * declared:
            raise MediaError(f"{path.name}: truncated video (decoded {count} of {declared} declared frames)")
        if count != declared:  # small mismatch: pick again on the true count (rare; may decode a second time)
            idx = segment_indices(count, n_samples, u)
            if not set(idx) <= picked.keys():
                picked, count = _decode_picked_path(path, set(idx))
        frames = np.stack([picked[i] for i in idx])  # [n_samples, H, W, 3] uint8; raises if sizes differ
    except MediaError:
        raise
    except (*DECODE_ERRORS, KeyError) as err:
        raise MediaError(f"{path.name}: cannot decode video: {decode_reason(err)}") from None
    if still:
        duration = 0.0
    elif duration <= 0 and fps:
        duration = count / fps
    info = VideoInfo(frame_count=count, width=width, height=height, fps=fps, duration_s=duration)
    return frames, sampled_mask(count, n_samples), info


def load_video(
    path: Path,
    cfg: PreprocessConfig,
    train: bool,
    rng: np.random.Generator | None,
    *,
    still: bool = False,
    container: av.container.InputContainer | None = None,
    sound: SoundTrack | None = None,
) -> tuple[VideoTensor, VideoInfo]:
    """Decode, sample and normalise one video file (or still image with ``still=True``); ``container`` and ``sound``
    as for :func:`decode_frames`."""
    n = cfg.n_frames(train)
    frames, mask, info = decode_frames(path, n, draws(n, train, rng), still=still, container=container, sound=sound)
    return VideoTensor(pixels=frames_to_tensor(frames, cfg), mask=torch.tensor(mask)), info

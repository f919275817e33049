"""Tiny real media written with PyAV for the preprocessing tests (32×32 frames, about a second of sound).

Frame ``i`` of a written video is a flat grey of level ``frame_level(i)``, so a decoded frame tells which source frame
it was; audio is a sine tone.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def frame_level(i: int) -> int:
    """Grey level of frame ``i`` (distinct for up to 24 frames, survives yuv420 + h264 within ±3)."""
    return 16 + 9 * i


def tone(seconds: float, sample_rate: int, channels: int = 1, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A sine tone ``[channels, S]`` float32."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None], channels, axis=0)


def _add_audio(container: Any, wave: np.ndarray, sample_rate: int, codec: str) -> tuple[Any, list[Any]]:
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    stream = container.add_stream(codec, rate=sample_rate, layout=layout)
    frames = []
    step = 1024
    fmt = "fltp" if codec == "aac" else "s16"
    for k in range(0, wave.shape[1], step):
        chunk = wave[:, k : k + step]
        if fmt == "s16":
            data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)  # packed [1, S*C]
        else:
            data = np.ascontiguousarray(chunk)
        f = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        f.sample_rate = sample_rate
        f.pts = k
        f.time_base = Fraction(1, sample_rate)
        frames.append(f)
    return stream, frames


def write_video(
    path: Path,
    n_frames: int = 8,
    fps: int = 8,
    size: tuple[int, int] = (32, 32),
    audio: tuple[int, int] | None = (16000, 1),
    faststart: bool = False,
) -> Path:
    """An h264 mp4 (``size`` = width, height) with an AAC track of ``audio`` = (rate, channels) lasting the video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "10"}
        audio_stream, audio_frames = None, []
        if audio is not None:
            rate, ch = audio
            audio_stream, audio_frames = _add_audio(c, tone(n_frames / fps, rate, ch), rate, "aac")
        for i in range(n_frames):
            img = np.full((size[1], size[0], 3), frame_level(i), dtype=np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if audio_stream is not None:
            for f in audio_frames:
                for p in audio_stream.encode(f):
                    c.mux(p)
            for p in audio_stream.encode():
                c.mux(p)
    return path


def write_wav(path: Path, seconds: float = 1.0, sample_rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="wav") as c:
        stream, frames = _add_audio(c, tone(seconds, sample_rate, channels), sample_rate, "pcm_s16le")
        for f in frames:
            for p in stream.encode(f):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)
    return path


def write_zero_length(path: Path) -> Path:
    """A container with a header and a stream but no frames (a ``.wav`` gets audio, anything else video)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="wav" if path.suffix == ".wav" else None) as c:
        if path.suffix == ".wav":
            c.add_stream("pcm_s16le", rate=16000, layout="mono")
        else:
            s = c.add_stream("libx264", rate=8)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    return path


def write_image(path: Path, size: tuple[int, int] = (40, 30), level: int = 128) -> Path:
    """A flat-grey png/jpg of ``size`` = (width, height)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), level, dtype=np.uint8)).save(path)
    return path


def write_manifest(root: Path, records: list[dict[str, Any]], name: str = "manifest.jsonl") -> Path:
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def record(clip_id: str, video: str | None = None, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "clip_id": clip_id,
        "captions": kw.pop("captions", [f"a grey square for {clip_id}", "a tone plays"]),
        "split": kw.pop("split", "train"),
        "source": "test",
        "audio_type": kw.pop("audio_type", "nonverbal"),
    }
    if video is not None:
        rec["video"] = video
    rec.update(kw)
    return rec

"""Real encodings made with the FFmpeg and espeak-ng command-line tools (Debian ``ffmpeg``, ``espeak-ng``), for the
format tests: each function writes one file and returns its path. Importable helpers, not fixtures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["audio", "ffmpeg", "needs_tools", "speech_wav", "still_png", "truncated_copy", "video"]

needs_tools = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None,
    reason="needs the ffmpeg and espeak-ng command-line tools (./run setup installs them)",
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def video(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "64x48",
    rate: str = "10",
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "sine=frequency=440",
    acodec: str = "aac",
    channels: int = 1,
    vf: str | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """A moving test pattern (``size``, ``rate`` fps, then the ``vf`` filter) with a ``lavfi`` audio source (or
    none) on ``channels`` channels, encoded as asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio is not None:
        args += ["-f", "lavfi", "-i", f"{audio}:duration={seconds}"]
    if vf is not None:
        args += ["-vf", vf]
    args += ["-c:v", vcodec, "-pix_fmt", pix_fmt]
    if vcodec == "libx264":
        args += ["-preset", "ultrafast"]
    if vcodec == "libvpx-vp9":
        args += ["-deadline", "realtime", "-cpu-used", "8"]
    if audio is not None:
        args += ["-c:a", acodec, "-ac", str(channels)]
    ffmpeg(*args, *extra, "-t", str(seconds), str(path))
    return path


def audio(path: Path, text: str, *, rate: int = 16000, codec: tuple[str, ...] = ()) -> Path:
    """espeak-ng saying ``text`` at ``rate`` Hz mono, encoded by the suffix (wav, mp3 with ``libmp3lame``, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.stem + ".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
    ffmpeg("-i", str(raw), "-ar", str(rate), "-ac", "1", *codec, str(path))
    raw.unlink()
    return path


def speech_wav(path: Path, text: str, *, rate: int = 16000) -> Path:
    """espeak-ng saying ``text``, resampled to ``rate`` Hz mono."""
    return audio(path, text, rate=rate)


def still_png(path: Path, size: str = "40x30") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=1:duration=1", "-frames:v", "1", str(path))
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> Path:
    """The first ``keep`` of ``src``'s bytes: a download or copy cut short."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst

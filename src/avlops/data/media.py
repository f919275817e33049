"""Media probing with PyAV (bundled FFmpeg): is a file decodable, and what does it hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
from av.audio.stream import AudioStream

__all__ = ["DECODE_ERRORS", "MediaError", "MediaInfo", "SoundTrack", "decode_reason", "open_media", "probe"]

#: What PyAV raises for a file it cannot open or decode.
DECODE_ERRORS = (av.FFmpegError, OSError, EOFError, ValueError, IndexError)


class MediaError(ValueError):
    """A media file that cannot be opened or decoded; the message says which and why."""


@dataclass(frozen=True)
class MediaInfo:
    path: str
    has_video: bool
    has_audio: bool
    duration_s: float | None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


def probe(path: Path, *, decode: bool = True) -> MediaInfo:
    """Open ``path`` and describe it; with ``decode`` also decode the first frame of each stream.

    Raises :class:`MediaError` when the file is missing, unreadable, holds no audio or video stream, or (with
    ``decode``) a stream yields no frame.
    """
    try:
        if not path.is_file():
            raise MediaError(f"{path}: file not found")
        if path.stat().st_size == 0:
            raise MediaError(f"{path}: file is empty")
        with av.open(str(path)) as container:
            vstreams = list(container.streams.video)
            astreams = list(container.streams.audio)
            if not vstreams and not astreams:
                raise MediaError(f"{path}: no audio or video stream")
            duration = float(container.duration) / av.time_base if container.duration else None
            info = MediaInfo(
                path=str(path),
                has_video=bool(vstreams),
                has_audio=bool(astreams),
                duration_s=duration,
                width=vstreams[0].codec_context.width if vstreams else None,
                height=vstreams[0].codec_context.height if vstreams else None,
                fps=float(vstreams[0].average_rate) if vstreams and vstreams[0].average_rate else None,
                sample_rate=astreams[0].codec_context.sample_rate if astreams else None,
                channels=astreams[0].codec_context.channels if astreams else None,
            )
            if decode:
                for stream in (*vstreams[:1], *astreams[:1]):
                    container.seek(0)
                    if next(iter(container.decode(stream)), None) is None:
                        raise MediaError(f"{path}: {stream.type} stream has no decodable frame")
            return info
    except MediaError:
        raise
    except (*DECODE_ERRORS, StopIteration) as err:
        raise MediaError(f"{path}: cannot decode: {decode_reason(err)}") from None


@dataclass
class SoundTrack:
    """The undecoded packets of a file's first audio stream, gathered while its video was decoded from the same open
    container: the sound without a second open (format probing) and demux of the file.

    ``demuxed`` is set once a whole pass filled it; until then a reader must open the file itself. Empty ``packets``
    after a pass mean the file has no audio stream. The container must stay open until the packets are decoded.
    """

    packets: list[av.Packet[AudioStream]] = field(default_factory=list)
    demuxed: bool = False


def open_media(path: Path, what: str) -> av.container.InputContainer:
    """Open ``path`` for decoding, single-threaded (workers are processes, one per core).

    Every stream's decoder gets one thread: FFmpeg's default pool (one thread per core, handed each frame or slice)
    costs more than it gives on short clips and fights the worker processes for the same cores. Raises
    :class:`MediaError` ("cannot decode ``what``") when FFmpeg cannot open the file.
    """
    try:
        container = av.open(str(path))
    except DECODE_ERRORS as err:
        raise MediaError(f"{path.name}: cannot decode {what}: {decode_reason(err)}") from None
    for stream in (*container.streams.video, *container.streams.audio):
        stream.codec_context.thread_count = 1
    return container


def decode_reason(err: BaseException) -> str:
    """Why a decoder failed, without FFmpeg's copy of the file's absolute path (the caller names the file): the same
    bad file gives the same reason wherever the dataset lives."""
    if isinstance(err, av.FFmpegError) and err.strerror:
        return f"{err.strerror} (FFmpeg error {err.errno})" if err.errno is not None else str(err.strerror)
    return str(err)

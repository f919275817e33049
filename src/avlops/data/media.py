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
                _check_complete(path, container, [*vstreams[:1], *astreams[:1]], duration)
                _check_wav_size(path)
            return info
    except MediaError:
        raise
    except (*DECODE_ERRORS, StopIteration) as err:
        raise MediaError(f"{path}: cannot decode: {decode_reason(err)}") from None


def _check_complete(
    path: Path, container: av.container.InputContainer, streams: list[av.stream.Stream], container_s: float | None
) -> None:
    """Read every packet of ``streams`` (demuxing, no decoding: a fraction of decoding's cost) and compare where
    each stream's data ends with the length its header declares. A file cut short (a faststart mp4 whose index
    promises frames that are not there, an mkv or wav that stops early) or with unreadable data in the middle raises
    :class:`MediaError` naming where it stopped."""
    ends: dict[int, float] = {}
    starts: dict[int, float] = {}
    container.seek(0)
    try:
        for packet in container.demux(streams):
            if packet.pts is None or packet.time_base is None or packet.size == 0:
                continue
            t = float(packet.pts * packet.time_base)
            idx = packet.stream.index
            starts[idx] = min(starts.get(idx, t), t)
            ends[idx] = max(ends.get(idx, t), t + float((packet.duration or 0) * packet.time_base))
    except DECODE_ERRORS as err:
        got = max(ends.values(), default=0.0)
        raise MediaError(
            f"{path}: truncated or corrupt: reading stopped at {got:.2f} s"
            + (f" of {container_s:.2f} s" if container_s else "")
            + f": {decode_reason(err)}"
        ) from None

    def short(got: float, declared: float) -> bool:
        return got < declared - max(0.25, 0.02 * declared)

    def length(stream: av.stream.Stream) -> float:
        start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        return ends[stream.index] - start

    measured = [s for s in streams if s.index in ends and s.frames != 1]  # a still image has no length to check
    for stream in measured:
        if stream.duration and stream.time_base:  # the stream declares its own length
            declared = float(stream.duration * stream.time_base)
            if short(length(stream), declared):
                raise MediaError(
                    f"{path}: truncated: its {stream.type} data ends at {length(stream):.2f} s, but the file "
                    f"declares {declared:.2f} s"
                )
    # streams without their own length (mkv, webm): together they must fill the container's (one may be shorter)
    rest = [s for s in measured if not (s.duration and s.time_base)]
    if rest and container_s and short(max(map(length, rest)), container_s):
        raise MediaError(
            f"{path}: truncated: its data ends at {max(map(length, rest)):.2f} s, but the file declares "
            f"{container_s:.2f} s"
        )


def _check_wav_size(path: Path) -> None:
    """A RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds was cut short (FFmpeg quietly
    shortens its duration to what is there, so the length comparison cannot see it)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            n = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if n != 0xFFFFFFFF and pos + 8 + n > size:  # 0xFFFFFFFF: a streamed wav of unknown length
                    raise MediaError(
                        f"{path}: truncated: its data chunk declares {n} bytes, the file holds {size - pos - 8}"
                    )
                return
            pos += 8 + n + (n & 1)


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
    if isinstance(err, av.FFmpegError):  # its text, not the raw code ("FFmpeg error 1094995529")
        return str(err.strerror) if err.strerror else f"{type(err).__name__} (FFmpeg error code {err.errno})"
    return str(err)

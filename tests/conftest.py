"""Shared test fixtures: tiny real media files written with PyAV (bundled FFmpeg), fast enough to make per test.

Use the fixtures, which hand back plain functions::

    def test_x(tmp_path, write_video, write_wav, write_image):
        write_video(tmp_path / "a.mp4")                        # H.264 + AAC, 16x16 px, 8 frames, 0.5 s of a sine
        write_video(tmp_path / "mute.mp4", with_audio=False)  # video stream only
        write_wav(tmp_path / "a.wav", seconds=1.0)
        write_image(tmp_path / "a.png")

    def test_y(tmp_path, sample_media):                        # one of each, written once per session
        shutil.copy(sample_media.video, tmp_path / "clip.mp4")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import pytest

if TYPE_CHECKING:
    from avlops.registry.register import Registration
    from serving_data import Deployment


def _frames(n: int, size: int) -> np.ndarray:
    """``n`` RGB frames of a square that moves diagonally over a gradient; shape [n, size, size, 3], uint8."""
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // max(size - 1, 1), y * 255 // max(size - 1, 1), np.full_like(x, 64)], axis=-1)
    frames = np.repeat(base[None].astype(np.uint8), n, axis=0)
    side = max(size // 4, 1)
    for i in range(n):
        o = (i * (size - side)) // max(n - 1, 1)
        frames[i, o : o + side, o : o + side] = 255
    return frames


def _sine(seconds: float, sample_rate: int, freq: float, channels: int) -> np.ndarray:
    """A sine at ``freq`` Hz, amplitude 0.3; shape [channels, samples], float32."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None], channels, axis=0)


def write_video(
    path: Path,
    seconds: float = 0.5,
    *,
    with_audio: bool = True,
    fps: int = 16,
    size: int = 16,
    sample_rate: int = 16000,
    freq: float = 440.0,
) -> Path:
    """Write an mp4 with an H.264 video stream (``size`` x ``size``, even) and, with ``with_audio``, an AAC sine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = max(round(seconds * fps), 1)
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "tune": "zerolatency"}
        if with_audio:
            aus = out.add_stream("aac", rate=sample_rate, layout="mono")
        for rgb in _frames(n_frames, size):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(vs.encode(None))
        if with_audio:
            samples = _sine(seconds, sample_rate, freq, channels=1)
            step = 1024  # the AAC frame size
            for start in range(0, samples.shape[1], step):
                chunk = np.ascontiguousarray(samples[:, start : start + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                out.mux(aus.encode(frame))
            out.mux(aus.encode(None))
    return path


def write_wav(
    path: Path, seconds: float = 0.5, *, sample_rate: int = 16000, freq: float = 440.0, channels: int = 1
) -> Path:
    """Write a 16-bit PCM wav holding a sine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "mono" if channels == 1 else "stereo"
    pcm = (_sine(seconds, sample_rate, freq, channels) * 32767).astype(np.int16)
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
        # packed s16 wants one row of interleaved samples: [1, samples * channels]
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = sample_rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_image(path: Path, size: int = 16) -> Path:
    """Write a still image (format from the suffix: png, jpg, ...) of a gradient with a white square."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frames(1, size)[0]).save(path)
    return path


MediaWriter = Callable[..., Path]


@pytest.fixture(scope="session", name="write_video")
def write_video_fixture() -> MediaWriter:
    """:func:`write_video`: ``write_video(path, seconds=0.5, with_audio=True, fps=16, size=16, ...) -> path``."""
    return write_video


@pytest.fixture(scope="session", name="write_wav")
def write_wav_fixture() -> MediaWriter:
    """:func:`write_wav`: ``write_wav(path, seconds=0.5, sample_rate=16000, freq=440.0, channels=1) -> path``."""
    return write_wav


@pytest.fixture(scope="session", name="write_image")
def write_image_fixture() -> MediaWriter:
    """:func:`write_image`: ``write_image(path, size=16) -> path``."""
    return write_image


@dataclass(frozen=True)
class SampleMedia:
    """One of each kind of media, written once per session; copy them into a test's dataset root."""

    video: Path  # H.264 + AAC, 0.5 s
    mute_video: Path  # H.264 only
    wav: Path
    image: Path  # png


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    """Read-only sample files shared by the whole session (copy before changing them)."""
    d = tmp_path_factory.mktemp("sample_media")
    return SampleMedia(
        video=write_video(d / "video.mp4"),
        mute_video=write_video(d / "mute.mp4", with_audio=False),
        wav=write_wav(d / "tone.wav"),
        image=write_image(d / "still.png"),
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian ``prometheus-pushgateway``) on 127.0.0.1; yields its URL."""
    import shutil
    import subprocess
    import time
    import urllib.request

    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.fail("prometheus-pushgateway is not installed: run ./run setup (it installs the Debian package)")
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen([binary, f"--web.listen-address={url[7:]}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Pushgateway did not start: {log.read_text()}")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------ a tiny real deployment (serving, registry)


@pytest.fixture(scope="session")
def one_thread() -> Iterator[None]:
    """One torch thread for the rest of the session: the 2 cores are shared (with a server's model processes too),
    tiny tensors gain nothing from more threads, and runs compared bit for bit need the same thread count. The
    training, evaluation, serving and registry tests request it for all their tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """Corpus, data, checkpoint, blessed verdict and catalogue (read-only: copy what a test changes)."""
    from serving_data import make_deployment  # torch and the whole library: only for the tests that use it

    return make_deployment(tmp_path_factory.mktemp("deployment"))


@pytest.fixture
def register(deployment: Deployment, tmp_path: Path) -> Callable[..., Registration]:
    """``register(repository=tmp_path / "registry", **register_model kwargs)``: the deployment's checkpoint."""
    from avlops.registry.params import RegisterConfig
    from avlops.registry.register import register_model

    def run(repository: Path | None = None, config: dict[str, Any] | None = None, **kwargs: Any) -> Registration:
        cfg = RegisterConfig.model_validate({"repository": str(repository or tmp_path / "registry"), **(config or {})})
        kwargs.setdefault("data_dir", deployment.data)
        return register_model(
            kwargs.pop("checkpoint", deployment.checkpoint),
            kwargs.pop("eval_dir", deployment.eval_dir),
            kwargs.pop("catalogue", deployment.catalogue),
            cfg,
            **kwargs,
        )

    return run

"""The synthetic tri-modal corpus: coloured shapes that move, with tones, noises and spoken words.

Each clip is a real ``.mp4`` (H.264 video + AAC audio, encoded with PyAV's bundled FFmpeg). Its *facts* are split
between the modalities on purpose, so that retrieval needs both to pick the right clip:

* visible only: the shape's **colour**, the **shape**, and its **motion**;
* audible only: the **sound** kind (tone, hum, clicks, noise bursts), the tone's **pitch**, and a spoken **word**
  (espeak-ng).

Every caption states all facts of its clip, and captions are a function of the facts alone. Clips with identical facts
therefore share captions, so splits are assigned per fact combination (a hash of it), never per clip: no caption text
can appear in two splits. Everything is drawn from ``cfg.seed`` and the clip index, so a seed always gives the same
manifest and, with the encoder settings below (one thread, no x264 mb-tree, bit-exact muxing), the same bytes for a
given PyAV/FFmpeg build, however many workers make them.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.codec.context import Flags
from tqdm import tqdm

from avlops.config import ConfigError
from avlops.data.manifest import write_manifest
from avlops.data.params import SynthConfig
from avlops.data.schema import AudioType, ClipRecord, Split

__all__ = [
    "COLOURS",
    "MOTIONS",
    "PITCHES_HZ",
    "SHAPES",
    "SOUNDS",
    "SOURCE",
    "WORDS",
    "ClipSpec",
    "SynthSummary",
    "captions_for",
    "check_config",
    "encode_mp4",
    "generate_corpus",
    "make_clip",
    "record_for",
    "render_audio",
    "render_frames",
    "sample_spec",
    "sample_specs",
    "split_for",
    "synthesize_words",
]

SOURCE = "synthetic"
CLIP_DIR = "clips"
MANIFEST = "manifest.jsonl"
STAGING_PREFIX = ".synth-staging-"

# --- vocabularies: the facts a clip can have ---------------------------------------------------------------------
#: Saturated, well-separated colours: they survive 4:2:0 chroma subsampling and stay apart from the grey background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "cyan": (40, 200, 220),
    "magenta": (210, 50, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
#: Unit direction of travel in image coordinates (x right, y down).
MOTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
#: Nonverbal sound kinds; only a tone has a pitch.
SOUNDS: tuple[str, ...] = ("tone", "hum", "clicks", "noise")
#: Tone pitches a factor 2.5 apart, so an FFT peak names the pitch without doubt, even next to speech.
PITCHES_HZ: dict[str, float] = {"low": 220.0, "middle": 550.0, "high": 1375.0}
#: Spoken words: the ten digits (short, distinct, and espeak-ng says them clearly).
WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Audio types are drawn with equal odds.
AUDIO_TYPES: tuple[AudioType, ...] = (AudioType.VERBAL, AudioType.NONVERBAL, AudioType.MIXED)

# --- caption phrasing: every variant states the same facts, so variety never changes what a caption means --------
OBJECT_PHRASES: tuple[str, ...] = ("a {colour} {shape}", "the {colour} {shape}", "a {colour} {shape} shape")
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves left", "slides to the left", "drifts leftward"),
    "right": ("moves right", "slides to the right", "drifts rightward"),
    "up": ("moves up", "rises", "floats upward"),
    "down": ("moves down", "falls", "sinks downward"),
}
#: (noun phrases, clauses) per sound; ``{pitch}`` is filled for tones.
SOUND_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tone": (
        ("a {pitch} tone", "a {pitch}-pitched tone", "a steady {pitch} tone"),
        ("a {pitch} tone plays", "a {pitch}-pitched tone sounds"),
    ),
    "hum": (("a hum", "a steady hum", "a buzzing hum"), ("a hum drones", "something hums")),
    "clicks": (("clicks", "a series of clicks", "rapid clicking"), ("something clicks", "clicks ring out")),
    "noise": (("bursts of noise", "noise bursts", "crackles of static"), ("noise bursts crackle", "static hisses")),
}
SPEECH_PHRASES: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("a voice saying '{word}'", "someone saying '{word}'", "the spoken word '{word}'"),
    ("a voice says '{word}'", "someone says '{word}'"),
)
#: ``{o}`` object, ``{m}`` motion, ``{a}`` audio noun phrase, ``{c}`` audio clause.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{o} {m} while {c}",
    "{c} as {o} {m}",
    "{o} {m} to the sound of {a}",
    "{o} {m}, accompanied by {a}",
    "with {a} in the background, {o} {m}",
    "you hear {a} and see {o} that {m}",
)

# --- rendering and encoding constants ------------------------------------------------------------------------------
ESPEAK = "espeak-ng"
ESPEAK_VOICE = "en-us"
ESPEAK_WPM = 150
#: x264 settings chosen for byte-identical output (DVC hashes must not churn): one thread, because threaded output
#: depends on scheduling; and no macroblock-tree rate control, because on tiny frames it makes the output depend on
#: memory layout (measured at 64 px: 8 fresh processes gave 5 different outputs for the same clips; with address-space
#: randomisation off, or with ``mbtree=0`` at 16-96 px, every run was identical).
X264_OPTIONS = {"preset": "veryfast", "crf": "20", "threads": "1", "x264-params": "mbtree=0"}
AAC_BITRATE = 64_000
#: FFmpeg's AAC "fast" coder: ~4x faster than the default two-loop search (which took ~80 % of the time per clip), and
#: no worse on these sounds (median SNR after decoding 39 dB vs 34 dB).
AAC_OPTIONS = {"aac_coder": "fast"}
AUDIO_CHUNK = 1024  # AAC frame size
SPEECH_PEAK = 0.6
SOUND_GAIN = {"alone": 0.5, "under_speech": 0.3}  # a sound under speech is quieter, as in a voice-over


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip: its facts plus nuisance values that captions do not mention."""

    index: int
    colour: str
    shape: str
    motion: str
    sound: str | None  # None: speech only
    pitch: str | None  # set for tones only
    word: str | None  # None: no speech
    # nuisance: varies between clips with the same facts, so equal captions do not mean equal pixels
    background: int  # grey level of the background
    radius: float  # shape half-size, as a fraction of the frame
    start: tuple[float, float]  # centre at t=0, fractions of the frame
    travel: float  # distance covered over the clip, fraction of the frame
    speech_at: float  # where the word starts, as a fraction of the free time
    hum_hz: float
    audio_seed: int  # clicks and noise bursts

    @property
    def clip_id(self) -> str:
        return f"syn-{self.index:06d}"

    @property
    def audio_type(self) -> AudioType:
        if self.word is None:
            return AudioType.NONVERBAL
        return AudioType.VERBAL if self.sound is None else AudioType.MIXED

    @property
    def fact_key(self) -> str:
        """The facts, canonically: clips with the same key share captions and split."""
        return "|".join(v or "-" for v in (self.colour, self.shape, self.motion, self.sound, self.pitch, self.word))


def _stable_u64(text: str) -> int:
    # hashlib, not hash(): Python's str hash is salted per process
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def split_for(fact_key: str, val_fraction: float, test_fraction: float) -> Split:
    """The split of a fact combination: a hash of the facts, so every clip with these facts lands in the same split.

    The seed is not part of the hash, so corpora made with different seeds agree on splits too.
    """
    u = _stable_u64("avlops-synth-split:" + fact_key) / 2**64
    if u < test_fraction:
        return Split.TEST
    if u < test_fraction + val_fraction:
        return Split.VAL
    return Split.TRAIN


def captions_for(spec: ClipSpec) -> list[str]:
    """2-3 captions in different templates, each naming every fact; chosen by the facts alone."""
    rng = np.random.default_rng(_stable_u64("avlops-synth-captions:" + spec.fact_key))

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    n = int(rng.integers(2, 4))
    templates = rng.choice(len(CAPTION_TEMPLATES), size=n, replace=False)

    def audio_phrases() -> tuple[str, str]:
        """(noun phrase, clause) for the sound track."""
        speech = [pick(p).format(word=spec.word) for p in SPEECH_PHRASES] if spec.word is not None else None
        if spec.sound is None:
            assert speech is not None  # a clip always has a sound, a word, or both
            return speech[0], speech[1]
        nps, clauses = SOUND_PHRASES[spec.sound]
        sound = pick(nps).format(pitch=spec.pitch)
        if speech is None:
            return sound, pick(clauses).format(pitch=spec.pitch)
        return pick((f"{speech[0]} over {sound}", f"{sound} and {speech[0]}")), f"{speech[1]} over {sound}"

    captions = []
    for t in templates:
        obj = pick(OBJECT_PHRASES).format(colour=spec.colour, shape=spec.shape)
        motion = pick(MOTION_PHRASES[spec.motion])
        audio_np, audio_clause = audio_phrases()
        captions.append(CAPTION_TEMPLATES[int(t)].format(o=obj, m=motion, a=audio_np, c=audio_clause))
    return captions


def _seed_entropy(seed: int) -> int:
    # SeedSequence wants a non-negative integer; two's complement keeps every 64-bit seed distinct
    return seed & 0xFFFF_FFFF_FFFF_FFFF


def sample_spec(seed: int, index: int) -> ClipSpec:
    """Clip ``index`` of the corpus for ``seed``; independent of the corpus size, so a bigger corpus extends a
    smaller one."""
    rng = np.random.default_rng([_seed_entropy(seed), index])
    audio_type = AUDIO_TYPES[int(rng.integers(len(AUDIO_TYPES)))]
    sound = SOUNDS[int(rng.integers(len(SOUNDS)))] if audio_type is not AudioType.VERBAL else None
    pitch = list(PITCHES_HZ)[int(rng.integers(len(PITCHES_HZ)))] if sound == "tone" else None
    word = WORDS[int(rng.integers(len(WORDS)))] if audio_type is not AudioType.NONVERBAL else None
    motion = list(MOTIONS)[int(rng.integers(len(MOTIONS)))]
    travel = float(rng.uniform(0.35, 0.45))
    # the path [low, low + travel] along the motion stays within [0.22, 0.78] of the frame, so the shape never clips
    low = float(rng.uniform(0.22, 0.78 - travel))
    across = float(rng.uniform(0.3, 0.7))
    dx, dy = MOTIONS[motion]
    along = low if dx + dy > 0 else low + travel
    start = (along, across) if dx else (across, along)
    return ClipSpec(
        index=index,
        colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        motion=motion,
        sound=sound,
        pitch=pitch,
        word=word,
        background=int(rng.integers(16, 80)),
        radius=float(rng.uniform(0.12, 0.17)),
        start=start,
        travel=travel,
        speech_at=float(rng.uniform(0.1, 0.9)),
        hum_hz=float(rng.uniform(80.0, 100.0)),
        audio_seed=int(rng.integers(2**31)),
    )


def sample_specs(cfg: SynthConfig) -> list[ClipSpec]:
    return [sample_spec(cfg.seed, i) for i in range(cfg.clips)]


def record_for(spec: ClipSpec, cfg: SynthConfig, speech_seconds: Mapping[str, float] | None = None) -> ClipRecord:
    """The manifest record of ``spec``; ``attributes`` hold the ground truth the media can be checked against."""
    attrs: dict[str, str | int | float | bool] = {
        "colour": spec.colour,
        "shape": spec.shape,
        "motion": spec.motion,
        "sound": spec.sound or "none",
    }
    if spec.pitch is not None:
        attrs |= {"pitch": spec.pitch, "pitch_hz": PITCHES_HZ[spec.pitch]}
    if spec.word is not None:
        attrs["word"] = spec.word
        if speech_seconds is not None:
            start, length = _speech_window(spec, cfg.seconds, speech_seconds[spec.word])
            attrs |= {"speech_start_s": round(start, 4), "speech_s": round(length, 4)}
    # clips sharing a group have the same facts (and captions): retrieval metrics should treat them as equivalent
    attrs["group"] = f"g-{_stable_u64(spec.fact_key) >> 32:08x}"
    return ClipRecord(
        clip_id=spec.clip_id,
        video=f"{CLIP_DIR}/{spec.clip_id}.mp4",
        captions=captions_for(spec),
        audio_type=spec.audio_type,
        split=split_for(spec.fact_key, cfg.val_fraction, cfg.test_fraction),
        source=SOURCE,
        attributes=attrs,
    )


# --- rendering ------------------------------------------------------------------------------------------------------
def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dx``, ``dy``: offsets from the centre in radii; the shapes have roughly equal areas."""
    if shape == "circle":
        mask = dx**2 + dy**2 <= 1.0
    elif shape == "square":
        mask = np.maximum(np.abs(dx), np.abs(dy)) <= 0.88
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= 1.25
    elif shape == "triangle":  # apex up, base at dy = 0.8
        mask = (dy >= -1.1) & (dy <= 0.8) & (np.abs(dx) <= (dy + 1.1) * 0.65)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(mask, dtype=bool)


def render_frames(spec: ClipSpec, size: int, n_frames: int) -> np.ndarray:
    """RGB frames, ``(T, H, W, 3)`` uint8: the shape moves in a straight line over the grey background."""
    t = np.linspace(0.0, 1.0, n_frames, dtype=np.float32)  # (T,)
    dirx, diry = MOTIONS[spec.motion]
    cx = (spec.start[0] + dirx * spec.travel * t) * size  # (T,) pixel centres
    cy = (spec.start[1] + diry * spec.travel * t) * size
    r = spec.radius * size
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    dx = (grid[None, None, :] - cx[:, None, None]) / r  # (T, 1, W)
    dy = (grid[None, :, None] - cy[:, None, None]) / r  # (T, H, 1)
    mask = _shape_mask(
        spec.shape, np.broadcast_to(dx, (n_frames, size, size)), np.broadcast_to(dy, (n_frames, size, size))
    )
    frames = np.full((n_frames, size, size, 3), spec.background, dtype=np.uint8)
    frames[mask] = COLOURS[spec.colour]
    return frames


def _ramp(n: int, sample_rate: int, ramp_s: float = 0.01) -> np.ndarray:
    """Fade in and out (no clicks at the edges of a tone)."""
    k = max(1, min(n // 2, int(ramp_s * sample_rate)))
    env = np.ones(n, dtype=np.float32)
    env[:k] = np.linspace(0.0, 1.0, k, dtype=np.float32)
    env[n - k :] = np.linspace(1.0, 0.0, k, dtype=np.float32)
    return env


def _nonverbal(spec: ClipSpec, n: int, sample_rate: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(spec.audio_seed)
    out = np.zeros(n, dtype=np.float64)
    if spec.sound == "tone":
        assert spec.pitch is not None
        out = np.sin(2 * np.pi * PITCHES_HZ[spec.pitch] * t)
    elif spec.sound == "hum":  # a mains-like hum: a low fundamental, decaying harmonics, a slow swell
        for k in range(1, 7):
            out += np.sin(2 * np.pi * spec.hum_hz * k * t) / k
        out *= 0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t)
    elif spec.sound == "clicks":  # 4-6 clicks a second, each a 4 ms decaying broadband burst
        period = sample_rate / rng.uniform(4.0, 6.0)
        click = rng.standard_normal(int(0.004 * sample_rate)) * np.exp(-np.linspace(0, 6, int(0.004 * sample_rate)))
        for start in np.arange(rng.uniform(0, period), n - click.size, period).astype(int):
            out[start : start + click.size] += click
    elif spec.sound == "noise":  # white-noise bursts of 120-250 ms with gaps between them
        pos = int(rng.uniform(0.0, 0.2) * sample_rate)
        while pos < n:
            length = min(int(rng.uniform(0.12, 0.25) * sample_rate), n - pos)
            out[pos : pos + length] += rng.standard_normal(length) * np.hanning(length)
            pos += length + int(rng.uniform(0.15, 0.4) * sample_rate)
    else:
        raise ValueError(f"unknown sound {spec.sound!r}")
    peak = float(np.max(np.abs(out))) or 1.0
    signal: np.ndarray = (out / peak).astype(np.float32) * _ramp(n, sample_rate)
    return signal


def _speech_window(spec: ClipSpec, seconds: float, speech_s: float) -> tuple[float, float]:
    """Start and length (seconds) of the spoken word inside the clip."""
    length = min(speech_s, seconds)
    return spec.speech_at * (seconds - length), length


def render_audio(spec: ClipSpec, seconds: float, sample_rate: int, speech: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mono float32 in [-1, 1], ``round(seconds * sample_rate)`` samples; ``speech`` maps word -> waveform at
    ``sample_rate`` (see :func:`synthesize_words`)."""
    n = round(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float32)
    if spec.sound is not None:
        gain = SOUND_GAIN["alone"] if spec.word is None else SOUND_GAIN["under_speech"]
        out += gain * _nonverbal(spec, n, sample_rate)
    if spec.word is not None:
        wav = speech[spec.word]
        start_s, length_s = _speech_window(spec, seconds, wav.size / sample_rate)
        start, length = round(start_s * sample_rate), min(round(length_s * sample_rate), wav.size)
        length = min(length, n - start)
        peak = float(np.max(np.abs(wav))) or 1.0
        out[start : start + length] += SPEECH_PEAK / peak * wav[:length]
    return np.clip(out, -0.99, 0.99)


def synthesize_words(words: Iterable[str], sample_rate: int) -> dict[str, np.ndarray]:
    """Speak each word once with espeak-ng; return float32 waveforms at ``sample_rate``, silence trimmed.

    Raises :class:`FileNotFoundError` when espeak-ng is not installed.
    """
    words = sorted(set(words))
    if not words:
        return {}
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise FileNotFoundError(
            f"{ESPEAK} not found on PATH; it speaks the words of verbal clips (apt-get install {ESPEAK})"
        )
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="avlops-espeak-") as tmp:
        procs = {
            w: subprocess.Popen(
                [exe, "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WPM), "-w", f"{tmp}/{w}.wav", w],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for w in words
        }
        for w, proc in procs.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{ESPEAK} failed on {w!r}: {err.decode(errors='replace').strip()}")
            out[w] = _resample(*_read_wav(Path(tmp) / f"{w}.wav"), sample_rate)
    return out


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as fh:
        if fh.getsampwidth() != 2 or fh.getnchannels() != 1:
            raise RuntimeError(f"{path}: expected 16-bit mono from {ESPEAK}")
        return np.frombuffer(fh.readframes(fh.getnframes()), dtype=np.int16), fh.getframerate()


def _resample(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    """int16 mono at ``rate`` -> float32 at ``target`` with libswresample, then trimmed of leading/trailing silence."""
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    chunks = [f.to_ndarray()[0] for f in (*resampler.resample(frame), *resampler.resample(None))]
    wav = np.concatenate(chunks).astype(np.float32)
    loud = np.flatnonzero(np.abs(wav) > 0.02 * (float(np.max(np.abs(wav))) or 1.0))
    return wav[loud[0] : loud[-1] + 1] if loud.size else wav


# --- encoding -------------------------------------------------------------------------------------------------------
def encode_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """Write H.264 (yuv420p) + AAC (mono) to ``path``; bit-exact flags keep encoder version strings and timestamps out
    of the file, so the same input gives the same bytes."""
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        vstream = container.add_stream("libx264", rate=fps, options=X264_OPTIONS)
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        vstream.codec_context.thread_count = 1
        vstream.codec_context.flags |= Flags.bitexact
        astream = container.add_stream("aac", rate=sample_rate, layout="mono", options=AAC_OPTIONS)
        astream.bit_rate = AAC_BITRATE
        astream.codec_context.flags |= Flags.bitexact
        for i, img in enumerate(frames):
            vframe = av.VideoFrame.from_ndarray(img, format="rgb24")
            vframe.pts = i
            container.mux(vstream.encode(vframe))
        container.mux(vstream.encode(None))
        for start in range(0, audio.size, AUDIO_CHUNK):
            aframe = av.AudioFrame.from_ndarray(audio[None, start : start + AUDIO_CHUNK], format="flt", layout="mono")
            aframe.sample_rate = sample_rate
            aframe.pts = start
            container.mux(astream.encode(aframe))
        container.mux(astream.encode(None))


def make_clip(spec: ClipSpec, cfg: SynthConfig, path: Path, speech: Mapping[str, np.ndarray]) -> None:
    """Render and encode one clip to ``path``."""
    frames = render_frames(spec, cfg.size, max(1, round(cfg.seconds * cfg.fps)))
    audio = render_audio(spec, cfg.seconds, cfg.sample_rate, speech)
    encode_mp4(path, frames, audio, cfg.fps, cfg.sample_rate)


# --- the corpus -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_corpus` made, and how fast."""

    out: Path
    manifest: Path
    clips: int
    by_split: dict[str, int]
    by_audio_type: dict[str, int]
    seconds: float
    workers: int
    groups: int

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("inf")

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "clips": self.clips,
            "groups": self.groups,
            "by_split": self.by_split,
            "by_audio_type": self.by_audio_type,
            "seconds": round(self.seconds, 3),
            "clips_per_s": round(self.clips_per_s, 2),
            "workers": self.workers,
        }


class _ProgressBar(tqdm):  # type: ignore[type-arg]
    """tqdm without its monitor thread (it lingers ~10 s after a bar closes, and a process with threads must start its
    pools the slow, thread-safe way; see :func:`_start_method`). Our bar updates once per clip: nothing to monitor."""

    monitor_interval = 0


# Per-worker state, set once by the pool initializer (the speech cache is sent once, not with every task).
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: SynthConfig, clip_dir: Path, speech: Mapping[str, np.ndarray]) -> None:
    _WORKER.update(cfg=cfg, clip_dir=clip_dir, speech=speech)


def _make_in_worker(spec: ClipSpec) -> int:
    make_clip(spec, _WORKER["cfg"], _WORKER["clip_dir"] / f"{spec.clip_id}.mp4", _WORKER["speech"])
    return spec.index


def _start_method() -> str:
    """``fork`` when this process runs no other Python thread: workers start at once and import nothing. Otherwise
    ``forkserver``, because a fork copies locks that another thread may hold (a server's, tqdm's monitor) and the child
    can deadlock; that costs one fresh interpreter importing this module (~1 s), once per process. Native threads
    (OpenBLAS's pool, started by importing numpy) are not counted: those libraries reset themselves after a fork."""
    methods = mp.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


@contextmanager
def _clip_maker(
    cfg: SynthConfig, clip_dir: Path, speech: Mapping[str, np.ndarray], workers: int
) -> Iterator[Callable[[list[ClipSpec]], Iterator[int]]]:
    """Yield a function that makes clips and yields their indices as they finish, in this process or in a pool."""
    if workers <= 1:
        _init_worker(cfg, clip_dir, speech)
        yield lambda specs: map(_make_in_worker, specs)
        return
    ctx = mp.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([__name__])  # imported once in the server, not in every worker
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, clip_dir, speech)) as pool:
        yield lambda specs: pool.imap_unordered(
            _make_in_worker, specs, chunksize=max(1, min(8, len(specs) // (workers * 4)))
        )


def _swap_in(new: Path, dest: Path, trash: Path) -> None:
    """Replace the folder ``dest`` by ``new`` with two renames on one file system (never a half-written folder; ``dest``
    is missing only for the instant between the renames)."""
    if dest.exists():
        os.replace(dest, trash)
    os.replace(new, dest)


def _default_workers() -> int:
    # the cores this process may run on (a container or taskset can allow fewer than os.cpu_count())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_config(cfg: SynthConfig) -> None:
    """Cross-field checks the section model cannot express; raises :class:`ConfigError`."""
    if cfg.val_fraction + cfg.test_fraction >= 1.0:
        total = cfg.val_fraction + cfg.test_fraction
        raise ConfigError(f"SynthConfig: val_fraction + test_fraction = {total:g} leaves no training data")
    if cfg.size % 2:
        raise ConfigError(f"SynthConfig: size: {cfg.size} must be even (H.264 4:2:0 needs even frame sizes)")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"SynthConfig: out: {out} exists and is not a folder")


def generate_corpus(cfg: SynthConfig, progress: bool = True) -> SynthSummary:
    """Make ``cfg.clips`` clips under ``cfg.out/clips/`` and ``cfg.out/manifest.jsonl``.

    Clips and manifest are made in a staging folder inside ``cfg.out`` and moved in by renames, so a failed run leaves
    the previous corpus as it was and a re-run leaves no stale clips. Nothing else in ``cfg.out`` is touched.
    With more than one worker, processes may start by forkserver (see :func:`_start_method`): a script calling this
    must guard its entry point with ``if __name__ == "__main__":``, as for any multiprocessing that does not fork.
    """
    check_config(cfg)
    t0 = time.perf_counter()
    specs = sample_specs(cfg)
    speech = synthesize_words((s.word for s in specs if s.word is not None), cfg.sample_rate)
    speech_seconds = {w: wav.size / cfg.sample_rate for w, wav in speech.items()}
    records = [record_for(s, cfg, speech_seconds) for s in specs]
    workers = min(cfg.workers or _default_workers(), len(specs))

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGING_PREFIX}*"):  # left by a killed run; would otherwise end up in DVC's hash
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        clip_dir = staging / CLIP_DIR
        clip_dir.mkdir()
        with _clip_maker(cfg, clip_dir, speech, workers) as make_clips:
            bar = _ProgressBar(total=len(specs), desc="synth", unit="clip", disable=None if progress else True)
            with bar:
                for _ in make_clips(specs):
                    bar.update(1)
        write_manifest(staging / MANIFEST, records)
        _swap_in(clip_dir, out / CLIP_DIR, staging / "previous")
        os.replace(staging / MANIFEST, out / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - t0

    def count(values: Iterable[str]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    return SynthSummary(
        out=out,
        manifest=out / MANIFEST,
        clips=len(records),
        by_split=count(r.split.value for r in records),
        by_audio_type=count(r.audio_type.value for r in records),
        seconds=seconds,
        workers=workers,
        groups=len({s.fact_key for s in specs}),
    )

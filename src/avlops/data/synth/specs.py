"""The synthetic corpus's clip specifications: the facts a clip can have, how they are drawn from the seed, the
captions that state them, and the manifest record of each clip. Nothing here renders or encodes media.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from avlops.data.params import SynthConfig
from avlops.data.schema import AudioType, ClipRecord, Split

__all__ = [
    "AUDIO_TYPES",
    "CLIP_DIR",
    "COLOURS",
    "MANIFEST",
    "MOTIONS",
    "PITCHES_HZ",
    "SHAPES",
    "SOUNDS",
    "SOURCE",
    "WORDS",
    "ClipSpec",
    "captions_for",
    "record_for",
    "sample_spec",
    "sample_specs",
    "speech_window",
    "split_for",
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
#: The word in double quotes: CLIP's BPE reads a single quote before t or s as a contraction ("'two'" becomes "'t",
#: "wo", "'"), so single quotes would split four of the ten digits into pieces a decoder has to learn to reassemble.
SPEECH_PHRASES: tuple[tuple[str, ...], tuple[str, ...]] = (
    ('a voice saying "{word}"', 'someone saying "{word}"', 'the spoken word "{word}"'),
    ('a voice says "{word}"', 'someone says "{word}"'),
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
    # the centre's path [low, low + travel] along the motion stays within [0.22, 0.78] of the frame; shapes are big
    # (radius 0.20-0.25: on a 64 px frame the small model's 8 px patches see a shape's corners and edges, which the
    # tower did not learn from smaller ones, bench/results/shape_probe.md), so at the ends of its path a shape may run
    # up to 6 px past the frame's edge
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
        radius=float(rng.uniform(0.20, 0.25)),
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
            start, length = speech_window(spec, cfg.seconds, speech_seconds[spec.word])
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


def speech_window(spec: ClipSpec, seconds: float, speech_s: float) -> tuple[float, float]:
    """Start and length (seconds) of the spoken word inside the clip."""
    length = min(speech_s, seconds)
    return spec.speech_at * (seconds - length), length

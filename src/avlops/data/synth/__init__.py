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

Modules: ``specs`` (facts, captions, records), ``render`` (frames, sound, speech, encoding) and ``corpus`` (the
worker pool and the folder swap of :func:`generate_corpus`). The public names are re-exported here.
"""

from avlops.data.synth.corpus import STAGING_PREFIX, SynthSummary, check_config, generate_corpus
from avlops.data.synth.render import (
    ESPEAK,
    X264_OPTIONS,
    encode_mp4,
    make_clip,
    render_audio,
    render_frames,
    synthesize_words,
)
from avlops.data.synth.specs import (
    CLIP_DIR,
    COLOURS,
    MANIFEST,
    MOTIONS,
    PITCHES_HZ,
    SHAPES,
    SOUNDS,
    SOURCE,
    WORDS,
    ClipSpec,
    captions_for,
    record_for,
    sample_spec,
    sample_specs,
    split_for,
)

__all__ = [
    "CLIP_DIR",
    "COLOURS",
    "ESPEAK",
    "MANIFEST",
    "MOTIONS",
    "PITCHES_HZ",
    "SHAPES",
    "SOUNDS",
    "SOURCE",
    "STAGING_PREFIX",
    "WORDS",
    "X264_OPTIONS",
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

"""The tensor contract of every served model, defined once: names, dtypes and per-item shapes.

Export (:mod:`avlops.serving.export` names the ONNX graphs' tensors from here), the rendering of every
``config.pbtxt`` (:mod:`avlops.serving.model_repository`), the python-backend handlers
(:mod:`avlops.serving.backend` checks and builds tensors from here) and the client (:mod:`avlops.serving.client`)
all read this module. It imports only numpy (and the light config models), so a client does not load torch.

Shapes are per item: Triton prepends the batch axis (every model here batches, ``max_batch_size`` > 0), ``-1`` is a
variable axis. The models, in the order data flows::

    text -> text_preprocess -> tokens -> text_encoder -> token_feats, token_mask, text_embed -> catalogue_search
                                                                                    -> clip_ids, scores
    media -> clip_preprocess -----------+
    raw_frames, waveform, sample_rate   +-> frames, video_mask -> video_encoder -> video_feats --+-> clip_pool
      -> clip_preprocess ---------------+-> fbank, type_weight -> audio_encoder -> audio_feats --+   -> tv/ta/tav_embed
                                         (and audio_mask)                                        +-> caption_decoder
                                                                                                     -> caption

``clip_preprocess`` takes either input set (the others are optional inputs), so one process decodes both kinds of
clip. Ensembles (the client-facing models) wire them: ``embed_text``, ``embed_clip`` (encoded media bytes),
``embed_clip_arrays`` (decoded frames + waveform), ``search`` (text → top-k clips) and ``caption`` (media → caption).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum

import numpy as np

from avlops.serving.params import BatchingConfig

__all__ = [
    "ARRAY_INPUTS",
    "AUDIO_ENCODER",
    "CAPTION",
    "CAPTION_DECODER",
    "CATALOGUE_SEARCH",
    "CLIP_POOL",
    "CLIP_PREPROCESS",
    "EMBED_CLIP",
    "EMBED_CLIP_ARRAYS",
    "EMBED_TEXT",
    "MEDIA_INPUTS",
    "SEARCH",
    "TEXT_ENCODER",
    "TEXT_PREPROCESS",
    "VIDEO_ENCODER",
    "DType",
    "HandlerKind",
    "ModelSpec",
    "Runtime",
    "Sizes",
    "Step",
    "TensorSpec",
    "Tensors",
    "decode_texts",
    "encode_texts",
    "input_set",
    "repository_models",
    "tensor_dtypes",
]


class DType(Enum):
    """Triton's wire data types (the client's names); ``config_name`` is the ``config.pbtxt`` spelling."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    INT32 = "INT32"
    INT64 = "INT64"
    FP32 = "FP32"

    @property
    def config_name(self) -> str:
        return f"TYPE_{self.value}"

    @property
    def numpy(self) -> np.dtype[np.generic]:
        return np.dtype(_NUMPY[self])


_NUMPY = {
    DType.BOOL: np.bool_,
    DType.UINT8: np.uint8,
    DType.INT32: np.int32,
    DType.INT64: np.int64,
    DType.FP32: np.float32,
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: ``dims`` per item (the batch axis is implied), ``reshape`` what a native backend sees per item
    (``()`` for a scalar sent as ``[1]``); ``ragged`` inputs vary in size between requests, which Triton may still
    batch together (``allow_ragged_batch``: the python backend answers each request on its own)."""

    name: str
    dtype: DType
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    ragged: bool = False
    optional: bool = False  # an input a request may leave out (the model serves either of two input sets)

    def item_shape(self) -> tuple[int, ...]:
        """The per-item shape a handler works with (after ``reshape``)."""
        return self.dims if self.reshape is None else self.reshape

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a per-item shape fits ``dims`` (``-1`` matches any size)."""
        return len(shape) == len(self.dims) and all(d in (-1, s) for d, s in zip(self.dims, shape, strict=True))


class Runtime(Enum):
    """How a model runs on the local (CPU) server; the GPU repository maps ONNX to Triton's onnxruntime backend."""

    PYTHON = "python"  # a handler of avlops.serving in Triton's python backend
    ONNX = "onnx"  # an exported encoder, run by onnxruntime inside the python backend (see export.py for why)
    ENSEMBLE = "ensemble"


class HandlerKind(StrEnum):
    """Which handler of :mod:`avlops.serving` a model runs in Triton's python backend (its config's
    ``avlops.handler`` parameter); :func:`avlops.serving.backend.load_handler` builds each from a table."""

    TEXT_PREPROCESS = "text_preprocess"
    CLIP_PREPROCESS = "clip_preprocess"  # encoded and decoded clips in one process (torch is imported once)
    MEDIA_PREPROCESS = "media_preprocess"  # versions registered before clip_preprocess
    ARRAY_PREPROCESS = "array_preprocess"
    ONNX_ENCODER = "onnx_encoder"  # an exported encoder run by onnxruntime (the local server's runtime for ONNX)
    CLIP_POOL = "clip_pool"
    CATALOGUE_SEARCH = "catalogue_search"
    CAPTION_DECODER = "caption_decoder"


@dataclass(frozen=True)
class Step:
    """One step of an ensemble: ``inputs`` / ``outputs`` map the model's tensor names to the ensemble's."""

    model: str
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    runtime: Runtime
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str
    max_batch_size: int
    handler: HandlerKind | None = None  # what a python-backend model runs (None: an ensemble)
    steps: tuple[Step, ...] = ()
    dynamic_batching: bool = True
    instances: int = 1
    public: bool = False  # meant for clients (ensembles); the others are their parts

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)


def _by_name(specs: tuple[TensorSpec, ...], name: str, model: str) -> TensorSpec:
    for s in specs:
        if s.name == name:
            return s
    raise KeyError(f"{model} has no tensor {name!r}; it has {[s.name for s in specs]}")


@dataclass(frozen=True)
class Sizes:
    """The axes that depend on the registered model and its preprocessing."""

    context: int  # L: text tokens per caption
    frames: int  # F: frames per clip (evaluation sampling)
    resolution: int  # R: frame side
    slices: int  # S: audio slices per clip
    mel_bins: int  # M
    target_length: int  # T: fbank frames per slice
    embed_dim: int  # C
    vocab_size: int = 49408  # the decoder's token ids are below vocab_size + 1


# ------------------------------------------------------------------------------------------ model names
TEXT_PREPROCESS = "text_preprocess"
CLIP_PREPROCESS = "clip_preprocess"
TEXT_ENCODER = "text_encoder"
VIDEO_ENCODER = "video_encoder"
AUDIO_ENCODER = "audio_encoder"
CLIP_POOL = "clip_pool"
CATALOGUE_SEARCH = "catalogue_search"
CAPTION_DECODER = "caption_decoder"
EMBED_TEXT = "embed_text"
EMBED_CLIP = "embed_clip"
EMBED_CLIP_ARRAYS = "embed_clip_arrays"
SEARCH = "search"
CAPTION = "caption"


class Tensors:
    """The tensor names, once. Client-facing inputs are raw (text, encoded media, decoded arrays); the encoders' names
    are the ONNX graphs' (the ``avlops.models.export`` wrappers' names).

    Text travels as UTF-8 bytes in UINT8 tensors, zero-padded to the longest item of a request (:func:`encode_texts`,
    :func:`decode_texts`), not as Triton BYTES: with numpy 2 the python backend's stub corrupts BYTES tensors
    (it reads all-0x01 buffers and crashes, and returns empty BYTES outputs).
    """

    TEXT = "text"  # UINT8 [n]: one UTF-8 query or caption per item
    TOP_K = "top_k"  # INT32 [1]
    MEDIA = "media"  # UINT8 [n]: an encoded clip (mp4, webm, wav, png, ...)
    AUDIO_TYPE = "audio_type"  # UINT8 [n]: verbal | nonverbal | mixed | unknown (empty = unknown)
    RAW_FRAMES = "raw_frames"  # UINT8 [T, H, W, 3]: all of a clip's decoded RGB frames
    WAVEFORM = "waveform"  # FP32 [samples]: mono, in [-1, 1]
    SAMPLE_RATE = "sample_rate"  # INT32 [1]
    TOKENS = "tokens"
    TOKEN_FEATS = "token_feats"
    TOKEN_MASK = "token_mask"
    TEXT_EMBED = "text_embed"
    FRAMES = "frames"
    VIDEO_MASK = "video_mask"
    FBANK = "fbank"
    AUDIO_MASK = "audio_mask"
    TYPE_WEIGHT = "type_weight"
    VIDEO_FEATS = "video_feats"
    AUDIO_FEATS = "audio_feats"
    TV_EMBED = "tv_embed"
    TA_EMBED = "ta_embed"
    TAV_EMBED = "tav_embed"
    CLIP_IDS = "clip_ids"  # UINT8 [k, n]: UTF-8 ids, zero-padded
    SCORES = "scores"
    CAPTION = "caption"  # UINT8 [n]: UTF-8
    CAPTION_TOKENS = "caption_tokens"


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """Strings -> UTF-8 bytes [len(texts), longest] uint8, zero-padded (UTF-8 has no zero byte but NUL)."""
    raw = [t.encode("utf-8") for t in texts]
    out = np.zeros((len(raw), max((len(r) for r in raw), default=1) or 1), dtype=np.uint8)  # never 0 wide
    for i, r in enumerate(raw):
        out[i, : len(r)] = np.frombuffer(r, dtype=np.uint8)
    return out


def decode_texts(array: np.ndarray) -> list[str]:
    """UINT8 [..., n] -> one string per row (trailing zeros dropped); raises UnicodeDecodeError on bad UTF-8."""
    if array.ndim == 0 or array.shape[-1] == 0:  # zero-width ([B, 0]): B empty strings (numpy cannot reshape to -1, 0)
        return [""] * (int(np.prod(array.shape[:-1])) if array.ndim else 0)
    rows = np.asarray(array, dtype=np.uint8).reshape(-1, array.shape[-1])
    return [bytes(r).rstrip(b"\0").decode("utf-8") for r in rows]


def _tensors(s: Sizes) -> dict[str, TensorSpec]:
    t = Tensors
    specs = [
        TensorSpec(t.TEXT, DType.UINT8, (-1,), ragged=True),
        TensorSpec(t.TOP_K, DType.INT32, (1,)),
        TensorSpec(t.MEDIA, DType.UINT8, (-1,), ragged=True),
        TensorSpec(t.AUDIO_TYPE, DType.UINT8, (-1,), ragged=True),
        TensorSpec(t.RAW_FRAMES, DType.UINT8, (-1, -1, -1, 3), ragged=True),
        TensorSpec(t.WAVEFORM, DType.FP32, (-1,), ragged=True),
        TensorSpec(t.SAMPLE_RATE, DType.INT32, (1,)),
        TensorSpec(t.TOKENS, DType.INT64, (s.context,)),
        TensorSpec(t.TOKEN_FEATS, DType.FP32, (s.context, s.embed_dim)),
        TensorSpec(t.TOKEN_MASK, DType.BOOL, (s.context,)),
        TensorSpec(t.TEXT_EMBED, DType.FP32, (s.embed_dim,)),
        TensorSpec(t.FRAMES, DType.FP32, (s.frames, 3, s.resolution, s.resolution)),
        TensorSpec(t.VIDEO_MASK, DType.BOOL, (s.frames,)),
        TensorSpec(t.FBANK, DType.FP32, (s.slices, s.mel_bins, s.target_length)),
        TensorSpec(t.AUDIO_MASK, DType.BOOL, (s.slices,)),
        TensorSpec(t.TYPE_WEIGHT, DType.FP32, (1,), reshape=()),  # the ONNX audio graph takes type_weight [B]
        TensorSpec(t.VIDEO_FEATS, DType.FP32, (s.frames, s.embed_dim)),
        TensorSpec(t.AUDIO_FEATS, DType.FP32, (s.slices, s.embed_dim)),
        TensorSpec(t.TV_EMBED, DType.FP32, (s.embed_dim,)),
        TensorSpec(t.TA_EMBED, DType.FP32, (s.embed_dim,)),
        TensorSpec(t.TAV_EMBED, DType.FP32, (s.embed_dim,)),
        TensorSpec(t.CLIP_IDS, DType.UINT8, (-1, -1)),
        TensorSpec(t.SCORES, DType.FP32, (-1,)),
        TensorSpec(t.CAPTION, DType.UINT8, (-1,)),
        TensorSpec(t.CAPTION_TOKENS, DType.INT64, (-1,)),
    ]
    return {x.name: x for x in specs}


def tensor_dtypes() -> dict[str, DType]:
    """Every tensor's dtype by name (they do not depend on the model's sizes): what a client needs to build inputs."""
    return {name: spec.dtype for name, spec in _tensors(Sizes(1, 1, 1, 1, 1, 1, 1)).items()}


def _same(model: ModelSpec, rename: Mapping[str, str] | None = None, inputs: tuple[str, ...] | None = None) -> Step:
    """A step whose tensors keep their names in the ensemble (``rename`` maps the exceptions; ``inputs``: only these
    of the model's inputs, the others being optional)."""
    r = dict(rename or {})
    return Step(
        model.name,
        tuple((x.name, r.get(x.name, x.name)) for x in model.inputs if inputs is None or x.name in inputs),
        tuple((x.name, r.get(x.name, x.name)) for x in model.outputs),
    )


@dataclass(frozen=True)
class _Builder:
    sizes: Sizes
    batching: BatchingConfig
    t: dict[str, TensorSpec] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "t", _tensors(self.sizes))

    def specs(self, *names: str) -> tuple[TensorSpec, ...]:
        return tuple(self.t[n] for n in names)

    def model(
        self,
        name: str,
        runtime: Runtime,
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
        description: str,
        *,
        handler: HandlerKind,
        instances: int = 1,
        optional: tuple[str, ...] = (),
    ) -> ModelSpec:
        return ModelSpec(
            name,
            runtime,
            tuple(replace(s, optional=True) if s.name in optional else s for s in self.specs(*inputs)),
            self.specs(*outputs),
            description,
            self.batching.max_batch_size,
            handler=handler,
            instances=instances,
        )

    def ensemble(
        self, name: str, inputs: tuple[str, ...], outputs: tuple[str, ...], steps: tuple[Step, ...], description: str
    ) -> ModelSpec:
        return ModelSpec(
            name,
            Runtime.ENSEMBLE,
            self.specs(*inputs),
            self.specs(*outputs),
            description,
            self.batching.max_batch_size,
            steps=steps,
            dynamic_batching=False,  # ensembles only route; their steps batch
            public=True,
        )


def input_set(spec: ModelSpec, names: Sequence[str], name: str | None = None) -> ModelSpec:
    """``spec`` with only the inputs ``names``, each required (one of clip_preprocess's input sets); ``name`` renames
    it (a version registered before clip_preprocess serves the sets as media_preprocess and array_preprocess)."""
    inputs = tuple(replace(spec.input(n), optional=False) for n in names)
    return replace(spec, name=name or spec.name, inputs=inputs)


def repository_models(sizes: Sizes, batching: BatchingConfig | None = None) -> tuple[ModelSpec, ...]:
    """Every model of the repository for a model of these ``sizes``: composing models first, then ensembles."""
    b = _Builder(sizes, batching or BatchingConfig())
    composing = (*_preprocess_models(b), *_encoder_models(b), *_head_models(b))
    return (*composing, *_ensembles(b, {m.name: m for m in composing}))


#: What clip_preprocess reads from an encoded clip, and from a decoded one.
MEDIA_INPUTS = (Tensors.MEDIA, Tensors.AUDIO_TYPE)
ARRAY_INPUTS = (Tensors.RAW_FRAMES, Tensors.WAVEFORM, Tensors.SAMPLE_RATE, Tensors.AUDIO_TYPE)
_CLIP_INPUTS = (Tensors.FRAMES, Tensors.VIDEO_MASK, Tensors.FBANK, Tensors.AUDIO_MASK, Tensors.TYPE_WEIGHT)
_FEATURES = (Tensors.VIDEO_FEATS, Tensors.VIDEO_MASK, Tensors.AUDIO_FEATS, Tensors.AUDIO_MASK)

#: Models of versions registered before clip_preprocess: name -> (their input set, their handler)
LEGACY_MODELS = {
    "media_preprocess": (MEDIA_INPUTS, HandlerKind.MEDIA_PREPROCESS),
    "array_preprocess": (ARRAY_INPUTS, HandlerKind.ARRAY_PREPROCESS),
}


def _preprocess_models(b: _Builder) -> tuple[ModelSpec, ...]:
    """Raw requests (text, encoded media, decoded arrays) -> the encoders' inputs."""
    t, n = Tensors, b.batching.preprocess_instances
    return (
        b.model(
            TEXT_PREPROCESS,
            Runtime.PYTHON,
            (t.TEXT,),
            (t.TOKENS,),
            "UTF-8 text -> CLIP BPE token ids (avlops.preprocessing.text.tokenize)",
            handler=HandlerKind.TEXT_PREPROCESS,
            instances=n,
        ),
        b.model(
            CLIP_PREPROCESS,
            Runtime.PYTHON,
            (t.MEDIA, t.RAW_FRAMES, t.WAVEFORM, t.SAMPLE_RATE, t.AUDIO_TYPE),
            _CLIP_INPUTS,
            "an encoded clip (media) or decoded RGB frames + waveform -> frames and fbank slices "
            "(avlops.preprocessing.clip.preprocess_clip / preprocess_arrays)",
            handler=HandlerKind.CLIP_PREPROCESS,
            instances=n,
            optional=(t.MEDIA, t.RAW_FRAMES, t.WAVEFORM, t.SAMPLE_RATE),
        ),
    )


def _encoder_models(b: _Builder) -> tuple[ModelSpec, ...]:
    """The exported towers (ONNX)."""
    t, n, onnx = Tensors, b.batching.encoder_instances, HandlerKind.ONNX_ENCODER
    return (
        b.model(
            TEXT_ENCODER,
            Runtime.ONNX,
            (t.TOKENS,),
            (t.TOKEN_FEATS, t.TOKEN_MASK, t.TEXT_EMBED),
            "VLAModel.encode_text (ONNX)",
            handler=onnx,
            instances=n,
        ),
        b.model(
            VIDEO_ENCODER,
            Runtime.ONNX,
            (t.FRAMES,),
            (t.VIDEO_FEATS,),
            "VLAModel.encode_video (ONNX)",
            handler=onnx,
            instances=n,
        ),
        b.model(
            AUDIO_ENCODER,
            Runtime.ONNX,
            (t.FBANK, t.TYPE_WEIGHT),
            (t.AUDIO_FEATS,),
            "VLAModel.encode_audio (ONNX)",
            handler=onnx,
            instances=n,
        ),
    )


def _head_models(b: _Builder) -> tuple[ModelSpec, ...]:
    """What runs on the encoders' features: pooling, catalogue search, caption decoding."""
    t, n = Tensors, b.batching.handler_instances
    return (
        b.model(
            CLIP_POOL,
            Runtime.PYTHON,
            _FEATURES,
            (t.TV_EMBED, t.TA_EMBED, t.TAV_EMBED),
            "per-group clip embeddings: masked mean of frames (T-V), audio slices (T-A), both (T-AV)",
            handler=HandlerKind.CLIP_POOL,
            instances=n,
        ),
        b.model(
            CATALOGUE_SEARCH,
            Runtime.PYTHON,
            (t.TOKEN_FEATS, t.TOKEN_MASK, t.TEXT_EMBED, t.TOP_K),
            (t.CLIP_IDS, t.SCORES),
            "top-k clips of the version's catalogue by avlops.task.similarity_matrix",
            handler=HandlerKind.CATALOGUE_SEARCH,
            instances=n,
        ),
        b.model(
            CAPTION_DECODER,
            Runtime.PYTHON,
            _FEATURES,
            (t.CAPTION, t.CAPTION_TOKENS),
            "VLAModel.generate (beam search) over the audio-visual memory, decoder steps in ONNX",
            handler=HandlerKind.CAPTION_DECODER,
            instances=n,
        ),
    )


def _ensembles(b: _Builder, m: Mapping[str, ModelSpec]) -> tuple[ModelSpec, ...]:
    """The client-facing models: each wires composing models ``m`` (by name) into one request."""
    t = Tensors
    text_steps = (_same(m[TEXT_PREPROCESS]), _same(m[TEXT_ENCODER]))
    clip_steps = (_same(m[VIDEO_ENCODER]), _same(m[AUDIO_ENCODER]))
    embed_clip_outputs = (t.TV_EMBED, t.TA_EMBED, t.TAV_EMBED, *_FEATURES)
    return (
        b.ensemble(
            EMBED_TEXT,
            (t.TEXT,),
            (t.TEXT_EMBED, t.TOKEN_FEATS, t.TOKEN_MASK),
            text_steps,
            "text -> pooled embedding and token features",
        ),
        b.ensemble(
            EMBED_CLIP,
            (t.MEDIA, t.AUDIO_TYPE),
            embed_clip_outputs,
            (_same(m[CLIP_PREPROCESS], inputs=MEDIA_INPUTS), *clip_steps, _same(m[CLIP_POOL])),
            "encoded clip -> embedding per modality group, and frame / audio-slice features",
        ),
        b.ensemble(
            EMBED_CLIP_ARRAYS,
            (t.RAW_FRAMES, t.WAVEFORM, t.SAMPLE_RATE, t.AUDIO_TYPE),
            embed_clip_outputs,
            (_same(m[CLIP_PREPROCESS], inputs=ARRAY_INPUTS), *clip_steps, _same(m[CLIP_POOL])),
            "decoded frames + waveform -> embedding per modality group, and frame / audio-slice features",
        ),
        b.ensemble(
            SEARCH,
            (t.TEXT, t.TOP_K),
            (t.CLIP_IDS, t.SCORES),
            (*text_steps, _same(m[CATALOGUE_SEARCH])),
            "text -> the top-k clips of the catalogue and their scores",
        ),
        b.ensemble(
            CAPTION,
            (t.MEDIA, t.AUDIO_TYPE),
            (t.CAPTION, t.CAPTION_TOKENS),
            (_same(m[CLIP_PREPROCESS], inputs=MEDIA_INPUTS), *clip_steps, _same(m[CAPTION_DECODER])),
            "encoded clip -> a caption (beam search)",
        ),
    )

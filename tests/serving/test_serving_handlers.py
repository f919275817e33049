"""The served models' handlers without Triton: the same tensors as the library's preprocessing and scoring, and every
bad input refused with an InputError that touches only its own request."""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avlops.data.schema import ClipRecord
from avlops.modality import ModalityGroup
from avlops.models.vla import TextFeatures, VLAOutput, audio_type_weight, fuse_audiovisual
from avlops.objective import Similarity
from avlops.preprocessing.clip import preprocess_arrays, preprocess_clip
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.text import tokenize
from avlops.serving.bundle import load_model
from avlops.serving.catalogue import Catalogue
from avlops.serving.contract import (
    ARRAY_INPUTS,
    MEDIA_INPUTS,
    Sizes,
    Tensors,
    decode_texts,
    encode_texts,
    repository_models,
)
from avlops.serving.handler import InputError
from avlops.serving.params import SearchSimilarity, ServingLimits
from avlops.serving.pooling import ClipPool
from avlops.serving.preprocess import ArrayPreprocess, ClipPreprocess, MediaPreprocess, TextPreprocess, part
from avlops.serving.search import WEIGHT_HEADS, CatalogueArrays, CatalogueSearch
from avlops.task import Batch, group_features, similarity_matrix
from avlops.training.checkpoint import latest_checkpoint  # noqa: F401 - the deployment's run layout
from serving_data import Deployment

T = Tensors
SIZES = Sizes(context=16, frames=2, resolution=32, slices=1, mel_bins=64, target_length=128, embed_dim=32)
SPECS = {m.name: m for m in repository_models(SIZES)}
MEDIA_SPEC = part(SPECS["clip_preprocess"], MEDIA_INPUTS)
ARRAY_SPEC = part(SPECS["clip_preprocess"], ARRAY_INPUTS)
PRE = PreprocessConfig(resolution=32, frames=2, eval_frames=2, target_length=128, sample_rate=16000, audio_slices=1)


def _wav_bytes(seconds: float, rate: int = 1000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), dtype=np.int16).tobytes())
    return buf.getvalue()


def _media(data: bytes, audio_type: str = "unknown") -> dict[str, np.ndarray]:
    return {T.MEDIA: np.frombuffer(data, dtype=np.uint8)[None], T.AUDIO_TYPE: encode_texts([audio_type])}


def test_text_preprocess_tokenizes_like_the_library_and_refuses_bad_text() -> None:
    handler = TextPreprocess(SPECS["text_preprocess"], 16, ServingLimits(max_text_chars=40))
    good = {T.TEXT: encode_texts(["a red  circle\tmoves left", "short"])}
    empty = {T.TEXT: encode_texts(["   "])}
    control = {T.TEXT: encode_texts(["bell \x07 rings"])}
    long = {T.TEXT: encode_texts(["x" * 41])}
    bad_utf8 = {T.TEXT: np.array([[0xFF, 0xFE, 0x41]], dtype=np.uint8)}
    wrong_dtype = {T.TEXT: np.array([[1.0]], dtype=np.float32)}
    zero_width = {T.TEXT: np.zeros((1, 0), dtype=np.uint8)}  # [1, 0]: numpy cannot reshape it to rows of 0
    out = handler.handle([good, empty, control, long, bad_utf8, wrong_dtype, zero_width])
    assert isinstance(out[0], dict)
    np.testing.assert_array_equal(out[0][T.TOKENS], tokenize(["a red circle moves left", "short"], 16).tokens.numpy())
    messages = [str(o) for o in out[1:]]
    assert all(isinstance(o, InputError) for o in out[1:])
    assert "empty" in messages[0] and "control" in messages[1] and "41 characters" in messages[2]
    assert "UTF-8" in messages[3] and "must be UINT8" in messages[4] and "empty" in messages[5]


def test_media_preprocess_gives_the_shard_tensors_of_a_clip(deployment: Deployment) -> None:
    handler = MediaPreprocess(MEDIA_SPEC, PRE, ServingLimits())
    rec = deployment.records[0]
    (out,) = handler.handle([_media(deployment.media(rec["clip_id"]).read_bytes(), rec["audio_type"])])
    assert isinstance(out, dict), out
    want = preprocess_clip(ClipRecord.model_validate(rec), deployment.manifest.parent, PRE, train=False, rng=None)
    np.testing.assert_allclose(out[T.FRAMES][0], want.video.pixels.numpy(), atol=1e-6)
    np.testing.assert_array_equal(out[T.VIDEO_MASK][0], want.video.mask.numpy())
    np.testing.assert_allclose(out[T.FBANK][0], want.audio.fbank.numpy(), atol=1e-5)
    np.testing.assert_array_equal(out[T.AUDIO_MASK][0], want.audio.mask.numpy())
    assert out[T.TYPE_WEIGHT].tolist() == [audio_type_weight(rec["audio_type"])]


def test_media_preprocess_refuses_bad_media_and_spares_the_rest(deployment: Deployment, tmp_path: Path) -> None:
    handler = MediaPreprocess(MEDIA_SPEC, PRE, ServingLimits(max_media_bytes=2_000_000))
    good = _media(deployment.media(deployment.records[1]["clip_id"]).read_bytes())
    mp4 = deployment.media(deployment.records[1]["clip_id"]).read_bytes()
    truncated = _media(mp4[: len(mp4) // 3])
    garbage = _media(b"this is not a video" * 50)
    oversized = _media(b"\0" * 2_000_001)
    bad_type = _media(mp4, "music")
    ten_minutes = _media(_wav_bytes(600.0))
    t0 = time.perf_counter()
    out = handler.handle([truncated, good, garbage, oversized, bad_type, ten_minutes])
    assert time.perf_counter() - t0 < 5.0  # the 10-minute clip is refused from its header, not decoded
    assert isinstance(out[1], dict)
    errors = {i: str(o) for i, o in enumerate(out) if isinstance(o, InputError)}
    assert sorted(errors) == [0, 2, 3, 4, 5]
    assert "cannot" in errors[0] and "cannot be decoded" in errors[2]
    assert "2000001 bytes" in errors[3] and "unknown audio type 'music'" in errors[4]
    assert "600.0 s (limit 120 s)" in errors[5]
    assert str(tmp_path) not in " ".join(errors.values())


def test_media_preprocess_refuses_a_claimed_sound_track_that_is_missing(deployment: Deployment, tmp_path: Path) -> None:
    import av

    path = tmp_path / "mute.mp4"
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=4)
        vs.width = vs.height = 32
        vs.pix_fmt = "yuv420p"
        for _ in range(4):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        out.mux(vs.encode(None))
    handler = MediaPreprocess(MEDIA_SPEC, PRE, ServingLimits())
    verbal, unknown = handler.handle([_media(path.read_bytes(), "verbal"), _media(path.read_bytes())])
    assert isinstance(verbal, InputError) and "audio_type is 'verbal'" in str(verbal)
    assert isinstance(unknown, dict) and not unknown[T.AUDIO_MASK].any()  # no sound: the masked placeholder


def test_array_preprocess_matches_the_library_and_checks_limits() -> None:
    handler = ArrayPreprocess(ARRAY_SPEC, PRE, ServingLimits(max_raw_frames=8, max_media_seconds=2))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 40, 48, 3), dtype=np.uint8)
    wave_ = (0.1 * rng.standard_normal(8000)).astype(np.float32)

    def request(f: np.ndarray, w: np.ndarray, rate: int = 16000) -> dict[str, np.ndarray]:
        return {
            T.RAW_FRAMES: f[None],
            T.WAVEFORM: w[None],
            T.SAMPLE_RATE: np.array([[rate]], np.int32),
            T.AUDIO_TYPE: encode_texts(["nonverbal"]),
        }

    nan = wave_.copy()
    nan[3] = np.nan
    out = handler.handle(
        [
            request(frames, wave_),
            request(np.zeros((9, 8, 8, 3), np.uint8), wave_),
            request(frames, nan),
            request(frames, np.zeros(16000 * 3, np.float32)),
            request(frames, wave_, rate=10),
        ]
    )
    assert isinstance(out[0], dict)
    want = preprocess_arrays(PRE, frames=frames, waveform=wave_, sample_rate=16000)
    np.testing.assert_allclose(out[0][T.FRAMES][0], want["video"].numpy(), atol=1e-6)
    np.testing.assert_allclose(out[0][T.FBANK][0], want["audio"].numpy(), atol=1e-5)
    assert out[0][T.TYPE_WEIGHT].tolist() == [1.0]
    assert "9 frames" in str(out[1]) and "NaN" in str(out[2]) and "3.0 s" in str(out[3]) and "10 Hz" in str(out[4])


def _library_side(model: torch.nn.Module, cat: Catalogue) -> tuple[object, Batch]:
    has_audio = cat.audio_mask.any(dim=1)
    batch = Batch(
        torch.zeros(len(cat), 1, dtype=torch.long),
        torch.empty(0),
        torch.empty(0),
        has_audio,
        torch.zeros(len(cat)),
        cat.video_mask,
        cat.audio_mask,
    )
    fused = fuse_audiovisual(cat.video_feats, cat.audio_feats, has_audio, cat.video_mask, cat.audio_mask)
    out = VLAOutput(TextFeatures(*(torch.empty(0),) * 3), cat.video_feats, cat.audio_feats, fused)
    return group_features(model, out, batch, ModalityGroup.T_AV), batch  # type: ignore[arg-type]


@pytest.mark.parametrize("similarity", [SearchSimilarity.FINE, SearchSimilarity.COARSE])
def test_catalogue_search_ranks_as_the_library_scores(deployment: Deployment, similarity: SearchSimilarity) -> None:
    from avlops.evaluation.checkpoint import load_for_evaluation

    loaded = load_for_evaluation(deployment.checkpoint, device="cpu")
    cat = Catalogue.load(deployment.catalogue)
    heads = {k: v.numpy() for k, v in loaded.model.state_dict().items() if k.split(".")[0] in WEIGHT_HEADS}
    arrays = CatalogueArrays.load(deployment.catalogue)
    handler = CatalogueSearch(SPECS["catalogue_search"], heads, arrays, loaded.objective, similarity, 100)
    captions = [r["captions"][0] for r in deployment.records[:3]]
    tokens = tokenize(captions, 16).tokens
    with torch.inference_mode():
        text = loaded.model.encode_text(tokens)
        clips, _ = _library_side(loaded.model, cat)
        from dataclasses import replace

        want = similarity_matrix(
            loaded.model,
            text,
            clips,
            replace(
                loaded.objective,  # type: ignore[arg-type]
                similarity=Similarity(similarity.value),
            ),
        )
    request = {
        T.TOKEN_FEATS: text.token_feats.numpy(),
        T.TOKEN_MASK: text.token_mask.numpy(),
        T.TEXT_EMBED: text.pooled.numpy(),
        T.TOP_K: np.full((3, 1), 4, np.int32),
    }
    (out,) = handler.handle([request])
    assert isinstance(out, dict), out
    top = want.topk(4, dim=1)
    for row in range(3):
        ids = decode_texts(out[T.CLIP_IDS][row])
        assert ids == [cat.clip_ids[i] for i in top.indices[row].tolist()]
        np.testing.assert_allclose(out[T.SCORES][row], top.values[row].numpy(), atol=1e-5)
    too_many = {**request, T.TOP_K: np.full((3, 1), len(cat) + 1, np.int32)}
    (err,) = handler.handle([too_many])
    assert isinstance(err, InputError) and f"top_k must be in [1, {len(cat)}]" in str(err)


def test_clip_pool_is_the_coarse_similarity_pooling(deployment: Deployment) -> None:
    from avlops.losses import masked_mean

    cat = Catalogue.load(deployment.catalogue)
    request = {
        T.VIDEO_FEATS: cat.video_feats[:3].numpy(),
        T.VIDEO_MASK: cat.video_mask[:3].numpy(),
        T.AUDIO_FEATS: cat.audio_feats[:3].numpy(),
        T.AUDIO_MASK: cat.audio_mask[:3].numpy(),
    }
    (out,) = ClipPool(SPECS["clip_pool"]).handle([request])
    assert isinstance(out, dict)
    clips, _ = _library_side(load_model(deployment.checkpoint), cat)
    want = masked_mean(clips.feats[:3], clips.mask[:3])  # type: ignore[attr-defined]
    np.testing.assert_allclose(out[T.TAV_EMBED], want.numpy(), atol=1e-6)
    np.testing.assert_allclose(out[T.TV_EMBED], masked_mean(cat.video_feats[:3], cat.video_mask[:3]).numpy(), atol=1e-6)


def test_every_handler_kind_has_a_builder() -> None:
    from avlops.serving import backend
    from avlops.serving.contract import HandlerKind

    assert set(backend._BUILDERS) == set(HandlerKind)


def test_clip_preprocess_answers_encoded_and_decoded_clips_each_with_its_part(deployment: Deployment) -> None:
    handler = ClipPreprocess(SPECS["clip_preprocess"], PRE, ServingLimits())
    rec = deployment.records[0]
    media = _media(deployment.media(rec["clip_id"]).read_bytes(), rec["audio_type"])
    rng = np.random.default_rng(0)
    arrays = {
        T.RAW_FRAMES: rng.integers(0, 255, (1, 4, 24, 24, 3), dtype=np.uint8),
        T.WAVEFORM: rng.standard_normal((1, 16000)).astype(np.float32),
        T.SAMPLE_RATE: np.array([[16000]], np.int32),
        T.AUDIO_TYPE: encode_texts(["nonverbal"]),
    }
    both = {**media, **{k: v for k, v in arrays.items() if k != T.AUDIO_TYPE}}
    neither = {T.AUDIO_TYPE: encode_texts(["unknown"])}
    out = handler.handle([media, arrays, both, neither])
    assert isinstance(out[0], dict) and isinstance(out[1], dict)
    (want_media,) = MediaPreprocess(MEDIA_SPEC, PRE, ServingLimits()).handle([media])
    (want_arrays,) = ArrayPreprocess(ARRAY_SPEC, PRE, ServingLimits()).handle([arrays])
    for got, want in ((out[0], want_media), (out[1], want_arrays)):
        assert isinstance(want, dict)
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value)
    for refused in out[2:]:
        assert isinstance(refused, InputError) and "either media" in str(refused)


def test_versions_registered_before_clip_preprocess_still_load(register: Callable[..., Any]) -> None:
    """Their media_preprocess and array_preprocess models read the same serving.json: each gets its input set."""
    from avlops.serving.backend import load_handler

    folder = Path(register().repository) / "models" / "clip_preprocess" / "1"
    media = load_handler("media_preprocess", folder)
    arrays = load_handler("array_preprocess", folder)
    assert isinstance(media, MediaPreprocess) and [s.name for s in media.spec.inputs] == list(MEDIA_INPUTS)
    assert isinstance(arrays, ArrayPreprocess) and [s.name for s in arrays.spec.inputs] == list(ARRAY_INPUTS)
    assert isinstance(load_handler("clip_preprocess", folder), ClipPreprocess)

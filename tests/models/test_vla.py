"""The model file: encoder shapes, the audio type token, audio-from-vision init, fusion, decoding, configs."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avlops.config import load_yaml
from avlops.data.schema import AudioType
from avlops.models.vla import (
    EOT_TOKEN_ID,
    PAD_TOKEN_ID,
    SOT_TOKEN_ID,
    AudioConfig,
    VLAConfig,
    VLAModel,
    audio_type_weight,
    text_token_mask,
)
from avlops.objective import CaptionStyle

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"


def test_encoder_shapes(make_model, make_batch, tiny_cfg) -> None:
    model, b = make_model(), make_batch(batch=3, frames=2, slices=2, has_audio=[True, False, True])
    c = tiny_cfg.embed_dim
    with torch.no_grad():
        text = model.encode_text(b.tokens)
        video = model.encode_video(b.frames)
        audio = model.encode_audio(b.fbank, b.audio_type_weight)
        av = model.encode_audiovisual(b.frames, b.fbank, b.audio_type_weight, b.has_audio)
    length = b.tokens.shape[1]
    assert text.token_feats.shape == (3, length, c) and text.pooled.shape == (3, c)
    assert text.token_mask.dtype == torch.bool
    eot = b.tokens.argmax(-1)
    assert text.token_mask.sum(-1).tolist() == (eot + 1).tolist()  # SOT … EOT, not the padding
    torch.testing.assert_close(text.pooled, text.token_feats[torch.arange(3), eot])
    assert video.shape == (3, 2, c) and audio.shape == (3, 2, c)
    assert av.feats.shape == (3, 4, c) and av.mask.shape == (3, 4)
    torch.testing.assert_close(av.feats, torch.cat([video, audio], dim=1))
    assert av.mask.tolist() == [[True] * 4, [True, True, False, False], [True] * 4]  # no audio: frames only


def test_frames_and_clips_are_encoded_independently(make_model, make_batch) -> None:
    model, b = make_model(), make_batch(batch=3, frames=2)
    with torch.no_grad():
        video = model.encode_video(b.frames)
        one = model.encode_video(b.frames[1:2, 1:2])  # clip 1, frame 1 alone
        text = model.encode_text(b.tokens).pooled
        text_one = model.encode_text(b.tokens[2:3]).pooled
    torch.testing.assert_close(one[0, 0], video[1, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_one[0], text[2], atol=1e-5, rtol=1e-5)


def test_padding_after_eot_does_not_change_text_features(make_model, make_batch) -> None:
    model, tokens = make_model(), make_batch(batch=2).tokens
    other = tokens.clone()
    other[~text_token_mask(tokens)] = 123  # anything after EOT: causal attention never looks there
    with torch.no_grad():
        a, b = model.encode_text(tokens), model.encode_text(other)
    torch.testing.assert_close(a.pooled, b.pooled)


def test_audio_type_weights() -> None:
    assert audio_type_weight(AudioType.VERBAL) == 0.0
    assert audio_type_weight(AudioType.NONVERBAL) == 1.0
    assert audio_type_weight(AudioType.MIXED) == audio_type_weight(AudioType.UNKNOWN) == 0.5
    with pytest.raises(ValueError, match="unknown audio type"):
        audio_type_weight("music")


def test_audio_type_token_changes_embedding_and_mixed_is_the_average(make_model, make_batch) -> None:
    model, b = make_model(), make_batch(batch=1)
    fbank = b.fbank.expand(3, -1, -1, -1)  # the same slice three times
    weights = torch.tensor([0.0, 1.0, 0.5])  # verbal, nonverbal, mixed
    with torch.no_grad():
        out = model.encode_audio(fbank, weights)
        tokens = model.audio.type_token(weights)
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert not torch.allclose(out[2], out[0], atol=1e-4) and not torch.allclose(out[2], out[1], atol=1e-4)
    torch.testing.assert_close(tokens[0], model.audio.type_embedding[0])
    torch.testing.assert_close(tokens[1], model.audio.type_embedding[1])
    torch.testing.assert_close(tokens[2], (tokens[0] + tokens[1]) / 2)


def test_audio_without_type_token_ignores_the_weight(make_model, make_batch, tiny_cfg) -> None:
    cfg = replace(tiny_cfg, audio=replace(tiny_cfg.audio, type_token=False))
    model, b = make_model(cfg=cfg), make_batch(batch=1)
    assert model.audio.type_embedding is None
    with torch.no_grad():
        a = model.encode_audio(b.fbank, torch.tensor([0.0]))
        z = model.encode_audio(b.fbank, torch.tensor([1.0]))
    torch.testing.assert_close(a, z)


def test_init_audio_from_vision(make_model, tiny_cfg) -> None:
    model = make_model()
    vision = model.visual.state_dict()
    type_row_before = model.audio.positional_embedding[-1].clone()
    type_embedding_before = model.audio.type_embedding.clone()
    loaded = model.audio.init_from_vision(vision)
    audio = model.audio.state_dict()
    assert "type_embedding" not in loaded and "conv1.weight" in loaded and "proj" in loaded
    # patch embedding: [W, 3, p, p] averaged over the RGB channels -> [W, 1, p, p]
    assert audio["conv1.weight"].shape == (32, 1, 8, 8)
    torch.testing.assert_close(audio["conv1.weight"], vision["conv1.weight"].mean(dim=1, keepdim=True))
    # positional embeddings: CLS row copied, the 4x4 grid interpolated bilinearly to the 8x16 fbank grid
    gm, gt = tiny_cfg.audio.grid
    pos, src = audio["positional_embedding"], vision["positional_embedding"]
    assert pos.shape == (1 + gm * gt + 1, 32) and (gm, gt) == (8, 16)
    torch.testing.assert_close(pos[0], src[0])
    grid = src[1:].reshape(4, 4, 32).permute(2, 0, 1)[None]  # [1, W, 4, 4]
    expected = F.interpolate(grid, size=(8, 16), mode="bilinear", align_corners=False)[0]  # [W, 8, 16]
    torch.testing.assert_close(pos[1:-1].reshape(8, 16, 32), expected.permute(1, 2, 0))
    # a grid position maps to the same place: patch (i, j) of the vision grid ~ patch (2i.., 4j..) of the fbank grid
    torch.testing.assert_close(pos[1:-1].mean(0), src[1:].mean(0), atol=1e-6, rtol=1e-5)
    # the type token's position and the type embeddings keep their own initialisation
    torch.testing.assert_close(pos[-1], type_row_before)
    torch.testing.assert_close(model.audio.type_embedding, type_embedding_before)
    for name in ("transformer.resblocks.1.attn.in_proj_weight", "ln_post.weight", "proj", "class_embedding"):
        torch.testing.assert_close(audio[name], vision[name])


def test_init_audio_from_vision_rejects_a_different_width(make_model, tiny_cfg) -> None:
    other = make_model(cfg=replace(tiny_cfg, vision=replace(tiny_cfg.vision, width=64, heads=2)))
    model = make_model()
    before = {k: v.clone() for k, v in model.audio.state_dict().items()}
    with pytest.raises(ValueError, match=r"audio\.\w+.*does not fit.*width, layers, heads and patch size"):
        model.audio.init_from_vision(other.visual.state_dict())
    for name, value in model.audio.state_dict().items():  # all or nothing
        torch.testing.assert_close(value, before[name])


def test_caption_logits_and_selected_positions(make_model, make_batch) -> None:
    model, b = make_model(), make_batch(batch=2, frames=2)
    with torch.no_grad():
        out = model(b.tokens, b.frames, b.fbank, b.audio_type_weight, b.has_audio)
        memory = model.caption_memory(out.video, out.audio)
        logits = model.caption_logits(b.tokens, memory.feats, memory.mask)
        positions = text_token_mask(b.tokens)
        picked = model.caption_logits(b.tokens, memory.feats, memory.mask, positions)
    frames, slices = 2, 1
    changes = frames - 1 if model.cfg.decoder.frame_differences else 0
    assert memory.feats.shape == (2, frames + changes + slices, 32) and memory.mask.all()
    assert logits.shape == (2, b.tokens.shape[1], 49409)  # CLIP vocab + [MASK]
    torch.testing.assert_close(picked, logits[positions])


def _with_differences(cfg: VLAConfig, on: bool) -> VLAConfig:
    return replace(cfg, decoder=replace(cfg.decoder, frame_differences=on))


def test_frame_change_items_follow_the_frames_and_read_only_the_change(make_model, tiny_cfg) -> None:
    """With ``decoder.frame_differences`` the memory holds F frames, then F-1 items of f[t+1] - f[t], then audio;
    a change item is masked when either of its frames is, and depends on the change alone."""
    model = make_model(cfg=_with_differences(tiny_cfg, True))
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(2, 4, 32, generator=g), torch.randn(2, 1, 32, generator=g)
    video_mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        memory = model.caption_memory(video, audio, video_mask)
        shifted = model.caption_memory(video + torch.randn(32, generator=g), audio, video_mask)  # same changes
        reversed_ = model.caption_memory(video.flip(1), audio, video_mask.flip(1))
    assert memory.feats.shape == (2, 4 + 3 + 1, 32)
    assert memory.mask.tolist() == [[True] * 3 + [False] + [True, True, False] + [True], [True] * 8]
    torch.testing.assert_close(shifted.feats[:, 4:7], memory.feats[:, 4:7])  # change items: the change only
    assert not torch.allclose(shifted.feats[:, :4], memory.feats[:, :4])  # frame items: the frames themselves
    assert not torch.allclose(reversed_.feats[1, 4:7], memory.feats[1, 4:7].flip(0))  # the direction is kept
    one_frame = model.caption_memory(video[:, :1], audio)  # no change to read: frames and audio only
    assert one_frame.feats.shape == (2, 2, 32)


def test_frame_change_items_are_off_by_default_so_valor_checkpoints_load(make_model, tiny_cfg) -> None:
    plain = make_model(cfg=_with_differences(tiny_cfg, False))
    with_changes = make_model(cfg=_with_differences(tiny_cfg, True))
    extra = set(with_changes.state_dict()) - set(plain.state_dict())
    assert extra == {
        "decoder.difference_proj.weight",
        "decoder.difference_proj.bias",
        "decoder.difference_ln.weight",
        "decoder.difference_ln.bias",
        "decoder.difference_embedding",
    }
    assert VLAConfig().decoder.frame_differences is False
    with pytest.raises(RuntimeError, match="difference"):
        plain.load_state_dict(with_changes.state_dict())  # a checkpoint that needs them says so


def _check_terminated(seq: torch.Tensor, max_len: int) -> None:
    assert seq.dtype == torch.long and seq.shape[1] <= max_len
    for row in seq.tolist():
        assert row[0] == SOT_TOKEN_ID
        end = row.index(EOT_TOKEN_ID)  # present …
        assert EOT_TOKEN_ID not in row[end + 1 :] and all(t == PAD_TOKEN_ID for t in row[end + 1 :])  # … once
        assert all(t not in (SOT_TOKEN_ID, PAD_TOKEN_ID, 49408) for t in row[1:end])


@pytest.mark.parametrize("style", list(CaptionStyle))
@pytest.mark.parametrize("beam_size", [1, 3])
def test_generate_returns_eot_terminated_sequences(make_model, make_batch, style, beam_size) -> None:
    model, b = make_model(), make_batch(batch=3, frames=2, has_audio=[True, False, True])
    with torch.no_grad():
        out = model(b.tokens, b.frames, b.fbank, b.audio_type_weight, b.has_audio)
        memory = model.caption_memory(out.video, out.audio, audio_mask=b.has_audio[:, None])
    seq = model.generate(memory.feats, memory.mask, max_len=7, beam_size=beam_size, style=style)
    assert seq.shape[0] == 3
    _check_terminated(seq, 7)


def test_generate_stops_early_when_eot_is_likely(make_model, make_batch) -> None:
    model, b = make_model(), make_batch(batch=2)
    with torch.no_grad():  # make EOT the most likely token everywhere
        model.decoder.ln_final.weight.zero_()
        model.decoder.ln_final.bias.copy_(model.decoder.token_embedding.weight[EOT_TOKEN_ID] * 100)
        memory = model.caption_memory(model.encode_video(b.frames))
    for beam in (1, 4):
        seq = model.generate(memory.feats, memory.mask, max_len=10, beam_size=beam)
        assert seq.tolist() == [[SOT_TOKEN_ID, EOT_TOKEN_ID]] * 2


def test_min_len_and_no_repeat_ngram_shape_the_caption(make_model, make_batch) -> None:
    """Issue 12 point 6: "a a ." and "' ' ' '": the decoding controls rule out short and repeating captions."""
    model, b = make_model(), make_batch(batch=2)
    with torch.no_grad():  # make one ordinary token, then EOT, the most likely ones everywhere
        model.decoder.ln_final.weight.zero_()
        emb = model.decoder.token_embedding.weight  # tied to the LM head: logits = final state @ emb.T
        emb[320], emb[EOT_TOKEN_ID] = torch.eye(emb.shape[1])[:2]  # orthogonal rows, far above the 0.02 init
        model.decoder.ln_final.bias.copy_(emb[320] * 100 + emb[EOT_TOKEN_ID] * 50)
        memory = model.caption_memory(model.encode_video(b.frames))
    for beam in (1, 3):
        plain = model.generate(memory.feats, memory.mask, max_len=8, beam_size=beam)
        assert plain.tolist()[0] == [SOT_TOKEN_ID, *[320] * 6, EOT_TOKEN_ID]  # the degenerate caption
        seq = model.generate(memory.feats, memory.mask, max_len=8, beam_size=beam, no_repeat_ngram=1)
        body = seq.tolist()[0][1 : seq.tolist()[0].index(EOT_TOKEN_ID)]
        assert body and len(body) == len(set(body))  # no token twice
        for row in model.generate(memory.feats, memory.mask, max_len=12, beam_size=beam, no_repeat_ngram=3).tolist():
            body = row[1 : row.index(EOT_TOKEN_ID)]
            assert all(a != b for a, b in itertools.pairwise(body))  # never a token twice in a row
        for row in model.generate(memory.feats, memory.mask, max_len=12, beam_size=beam, no_repeat_ngram=2).tolist():
            body = row[1 : row.index(EOT_TOKEN_ID)]
            bigrams = list(itertools.pairwise(body))
            assert len(bigrams) == len(set(bigrams))
    with torch.no_grad():  # EOT most likely: min_len keeps it away for 4 tokens
        model.decoder.ln_final.bias.copy_(emb[EOT_TOKEN_ID] * 100)
    seq = model.generate(memory.feats, memory.mask, max_len=10, beam_size=3, min_len=4)
    _check_terminated(seq, 10)
    assert all(row.index(EOT_TOKEN_ID) == 5 for row in seq.tolist())  # SOT + 4 tokens, then EOT
    with pytest.raises(ValueError, match="min_len must be in"):
        model.generate(memory.feats, memory.mask, max_len=5, min_len=4)


def test_config_files_load_and_round_trip() -> None:
    for name in ("tiny", "small", "base"):
        cfg = VLAConfig.from_dict(load_yaml(CONFIG_DIR / f"{name}.yaml"))
        assert VLAConfig.from_dict(cfg.to_dict()) == cfg
    base = VLAConfig.from_dict(load_yaml(CONFIG_DIR / "base.yaml"))
    assert (base.vision.width, base.vision.patch_size, base.vision.image_size, base.text.width) == (768, 16, 224, 512)
    assert base.audio.grid == (4, 32)  # VALOR: 64x512 fbank -> 128 patches


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"embed_dim": 32, "colour": 1}, "unknown key.*colour"),
        ({"vision": {"patch_sz": 8}}, r"vision: unknown key.*patch_sz"),
        ({"text": {"width": "32"}}, r"text\.width: expected int"),
        ({"audio": {"type_token": 1}}, r"audio\.type_token: expected bool"),
        ({"decoder": {"layers": True}}, r"decoder\.layers: expected int"),
        ({"text": [1, 2]}, "text: expected a mapping"),
        ({"vision": {"width": 30, "heads": 4}}, r"vision\.heads: width 30 is not divisible"),
        ({"audio": {"mel_bins": 60}}, r"audio\.patch_size: must divide mel_bins"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        VLAConfig.from_dict(data)


def test_config_accepts_int_for_float_and_is_frozen() -> None:
    cfg = VLAConfig.from_dict({"init_logit_scale": 14, "audio": {"mlp_ratio": 2}})
    assert cfg.init_logit_scale == 14.0 and isinstance(cfg.audio.mlp_ratio, float)
    with pytest.raises(AttributeError):
        cfg.embed_dim = 3  # type: ignore[misc]
    assert AudioConfig().grid == (4, 32)
    assert VLAModel(VLAConfig.from_dict(load_yaml(CONFIG_DIR / "tiny.yaml"))).mask_token_id == 49408


def test_model_modules_import_without_platform_packages() -> None:
    """Principle 2: the model, losses and task import torch only (none of the MLOps SDKs, not even pydantic/yaml)."""
    blocked = ["kfp", "feast", "great_expectations", "tritonclient", "pytriton", "prometheus_client", "dvc"]
    blocked += ["pydantic", "yaml", "open_clip", "onnx", "onnxruntime"]
    code = (
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "import avlops.models, avlops.models.vla, avlops.models.pretrained, avlops.losses, avlops.task\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

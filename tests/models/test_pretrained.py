"""Loading CLIP-layout weights: a state dict written here in OpenAI-CLIP / open_clip layout, and files on disk."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from avlops.models.pretrained import load_clip_state_dict, read_state_dict
from avlops.models.vla import VLAConfig, VLAModel


def _block(prefix: str, width: int) -> dict[str, torch.Tensor]:
    """One CLIP ``ResidualAttentionBlock`` (nn.MultiheadAttention layout), random values."""
    shapes = {
        "ln_1.weight": (width,),
        "ln_1.bias": (width,),
        "attn.in_proj_weight": (3 * width, width),
        "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width),
        "attn.out_proj.bias": (width,),
        "ln_2.weight": (width,),
        "ln_2.bias": (width,),
        "mlp.c_fc.weight": (4 * width, width),
        "mlp.c_fc.bias": (4 * width,),
        "mlp.c_proj.weight": (width, 4 * width),
        "mlp.c_proj.bias": (width,),
    }
    return {f"{prefix}{k}": torch.randn(s) for k, s in shapes.items()}


def clip_state_dict(cfg: VLAConfig) -> dict[str, torch.Tensor]:
    """A state dict in OpenAI CLIP's layout (clip/model.py) for ``cfg``'s text and vision sizes."""
    torch.manual_seed(123)
    t, v, c = cfg.text, cfg.vision, cfg.embed_dim
    sd = {
        "visual.conv1.weight": torch.randn(v.width, 3, v.patch_size, v.patch_size),
        "visual.class_embedding": torch.randn(v.width),
        "visual.positional_embedding": torch.randn(1 + v.grid**2, v.width),
        "visual.ln_pre.weight": torch.randn(v.width),
        "visual.ln_pre.bias": torch.randn(v.width),
        "visual.ln_post.weight": torch.randn(v.width),
        "visual.ln_post.bias": torch.randn(v.width),
        "visual.proj": torch.randn(v.width, c),
        "token_embedding.weight": torch.randn(t.vocab_size, t.width),
        "positional_embedding": torch.randn(t.context_length, t.width),
        "ln_final.weight": torch.randn(t.width),
        "ln_final.bias": torch.randn(t.width),
        "text_projection": torch.randn(t.width, c),
        "logit_scale": torch.tensor(4.6052),
        # OpenAI's TorchScript metadata entries
        "input_resolution": torch.tensor(v.image_size),
        "context_length": torch.tensor(t.context_length),
        "vocab_size": torch.tensor(t.vocab_size),
    }
    for i in range(v.layers):
        sd |= _block(f"visual.transformer.resblocks.{i}.", v.width)
    for i in range(t.layers):
        sd |= _block(f"transformer.resblocks.{i}.", t.width)
    return sd


def _target(key: str) -> str:
    return key if key.startswith("visual.") or key == "logit_scale" else "text." + key


def test_clip_state_dict_loads_completely_and_exactly(make_model) -> None:
    model = make_model()
    sd = clip_state_dict(model.cfg)
    report = load_clip_state_dict(model, sd)
    assert report.complete, report.summary()
    assert not (report.missing or report.unexpected or report.shape_mismatch)
    expected = {k for k in model.state_dict() if k.startswith(("text.", "visual.")) or k == "logit_scale"}
    assert set(report.matched) == expected
    own = model.state_dict()
    for key, value in sd.items():
        if key not in ("input_resolution", "context_length", "vocab_size"):
            assert torch.equal(own[_target(key)], value), key
    # the audio tower followed the loaded vision tower (CLIP4VLA)
    assert "conv1.weight" in report.audio_from_vision and report.audio_error is None
    assert torch.equal(own["audio.conv1.weight"], sd["visual.conv1.weight"].mean(dim=1, keepdim=True))
    assert torch.equal(own["audio.proj"], sd["visual.proj"])
    assert report.summary().startswith(f"matched {len(expected)}, missing 0, unexpected 0, shape mismatch 0")


def test_open_clip_linear_text_projection_is_transposed(make_model) -> None:
    model = make_model()
    sd = clip_state_dict(model.cfg)
    projection = sd.pop("text_projection")
    sd["text_projection.weight"] = projection.T.contiguous()  # open_clip's nn.Linear variant: [C, W]
    report = load_clip_state_dict(model, sd, init_audio=False)
    assert report.complete and report.audio_from_vision == ()
    assert torch.equal(model.text.text_projection, projection)


def test_mismatched_shapes_and_unexpected_keys_are_reported(make_model) -> None:
    model = make_model()
    sd = clip_state_dict(model.cfg)
    sd["positional_embedding"] = torch.randn(77, 32)  # CLIP's 77 positions; the tiny model has 16
    sd["visual.attnpool.c_proj.weight"] = torch.randn(4, 4)  # a ResNet CLIP's pooling head
    before = model.text.positional_embedding.detach().clone()
    report = load_clip_state_dict(model, sd)
    assert not report.complete
    assert [str(m) for m in report.shape_mismatch] == [
        "positional_embedding (77, 32) -> text.positional_embedding (16, 32)"
    ]
    assert report.missing == ("text.positional_embedding",)
    assert report.unexpected == ("visual.attnpool.c_proj.weight",)
    assert torch.equal(model.text.positional_embedding, before)  # left untouched
    summary = report.summary()
    assert "shape mismatch: positional_embedding (77, 32)" in summary
    assert "unexpected: visual.attnpool.c_proj.weight" in summary and "missing: text.positional_embedding" in summary


def test_vision_that_cannot_seed_the_audio_tower_is_reported(make_model, tiny_cfg) -> None:
    cfg = replace(tiny_cfg, vision=replace(tiny_cfg.vision, patch_size=16))  # audio keeps patch 8
    model = make_model(cfg=cfg)
    report = load_clip_state_dict(model, clip_state_dict(cfg))
    assert report.missing == () and report.audio_from_vision == ()
    assert report.audio_error is not None and "audio.conv1.weight" in report.audio_error
    assert "audio not initialised" in report.summary()


def test_read_state_dict_from_safetensors_and_torch_files(tmp_path, make_model) -> None:
    sd = {k: v for k, v in clip_state_dict(make_model().cfg).items() if k.startswith("visual.ln")}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "step": 3}, tmp_path / "ckpt.pt")
    for name in ("w.safetensors", "ckpt.pt"):
        got = read_state_dict(tmp_path / name)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_read_state_dict_never_unpickles_code(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"w": _Payload()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(path)
    assert "unpickled!" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="mapping of names to tensors"):
        read_state_dict(tmp_path / "list.pt")


@pytest.mark.slow  # importing open_clip takes ~10 s (torchvision, timm)
def test_loaded_towers_compute_what_open_clip_computes(tiny_cfg) -> None:
    """Our text and vision towers with open_clip's weights give open_clip's encode_text / encode_image."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    t, v = tiny_cfg.text, tiny_cfg.vision
    torch.manual_seed(0)
    reference = CLIP(
        embed_dim=tiny_cfg.embed_dim,
        vision_cfg=CLIPVisionCfg(
            layers=v.layers,
            width=v.width,
            patch_size=v.patch_size,
            image_size=v.image_size,
            head_width=v.width // v.heads,
        ),
        text_cfg=CLIPTextCfg(
            context_length=t.context_length, vocab_size=t.vocab_size, width=t.width, heads=t.heads, layers=t.layers
        ),
        quick_gelu=True,
    ).eval()
    with torch.no_grad():  # open_clip zero-initialises some biases; randomise everything so nothing is trivial
        for p in reference.parameters():
            p.normal_(0, 0.1)
    model = VLAModel(replace(tiny_cfg, quick_gelu=True)).eval()
    report = load_clip_state_dict(model, reference.state_dict())
    assert report.complete, report.summary()

    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, v.image_size, v.image_size, generator=g)
    tokens = torch.randint(1, 49000, (3, t.context_length), generator=g)
    tokens[:, 0], tokens[:, 9], tokens[:, 10:] = 49406, 49407, 0
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_text(tokens).pooled, reference.encode_text(tokens), atol=1e-5, rtol=1e-4
        )
        ours = model.encode_video(images[:, None])[:, 0]  # each image as a one-frame clip
        torch.testing.assert_close(ours, reference.encode_image(images), atol=1e-5, rtol=1e-4)

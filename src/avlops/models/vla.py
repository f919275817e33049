"""VLA: a vision–audio–language model of the CLIP4VLA / VALOR family, in one file that imports only torch.

Read top to bottom: constants and configs, building blocks, the three towers (CLIP text transformer, CLIP ViT per
frame, a ViT over fbank patches with CLIP4VLA's audio type token), audio–visual fusion (VALOR's sequence
concatenation), the caption decoder (causal self-attention + cross-attention to video, audio or both, VALOR's MGC
"concat" variant), then :class:`VLAModel` with the ``encode_*`` surface, ``forward`` and caption generation.

Parameter names mirror OpenAI CLIP's (``visual.conv1.weight``, ``transformer.resblocks.N.attn.in_proj_weight``,
``ln_final``, ``text_projection``, …) so loading CLIP weights is a rename (``avlops.models.pretrained``).
No loss, optimizer, I/O, logging or device moves live here (the configs are parsed by ``avlops.dataclass_config``,
standard library only): losses are in ``avlops.losses``, the wiring of model and losses in ``avlops.task``.

Shapes: B batch, L text length, F frames, S audio slices, M mel bins, T fbank frames, C ``embed_dim``, W a tower's
width, N tokens, V decoder vocabulary.
"""

# long: the whole model in one file, read top to bottom (STYLE.md: one model family, one file)

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlops.dataclass_config import config_from_dict
from avlops.objective import CaptionStyle

__all__ = [
    "AUDIO_TYPE_WEIGHTS",
    "CLIP_VOCAB_SIZE",
    "EOT_TOKEN_ID",
    "PAD_TOKEN_ID",
    "SOT_TOKEN_ID",
    "AudioConfig",
    "AudioEncoder",
    "CaptionDecoder",
    "DecoderConfig",
    "MaskedFeatures",
    "TextConfig",
    "TextEncoder",
    "TextFeatures",
    "VLAConfig",
    "VLAModel",
    "VLAOutput",
    "VisionConfig",
    "VisionEncoder",
    "audio_type_weight",
    "fuse_audiovisual",
    "text_token_mask",
]

# ---------------------------------------------------------------------------------------------------------------
# Constants: the open_clip BPE tokenizer's ids (preprocessing/text.py) and CLIP4VLA's audio type weights
# ---------------------------------------------------------------------------------------------------------------

CLIP_VOCAB_SIZE = 49408
SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407  # the highest id: CLIP pools text at ``tokens.argmax(-1)``
PAD_TOKEN_ID = 0  # also the id of "!", so padding is found from the EOT position, never from ``tokens == 0``

#: CLIP4VLA type-token weight w per audio type: token = (1 - w)·E[0] + w·E[1]; row 0 verbal, row 1 nonverbal.
AUDIO_TYPE_WEIGHTS: dict[str, float] = {"verbal": 0.0, "nonverbal": 1.0, "mixed": 0.5, "unknown": 0.5}


def audio_type_weight(audio_type: str) -> float:
    """Type-token weight for an ``AudioType`` (a ``StrEnum``, so its members are accepted as they are)."""
    try:
        return AUDIO_TYPE_WEIGHTS[str(audio_type)]
    except KeyError:
        raise ValueError(f"unknown audio type {audio_type!r}; expected one of {sorted(AUDIO_TYPE_WEIGHTS)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Configs: frozen dataclasses; values live in configs/model/*.yaml and enter through VLAConfig.from_dict
# ---------------------------------------------------------------------------------------------------------------


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {msg}")


def _check_tower(prefix: str, width: int, layers: int, heads: int, mlp_ratio: float) -> None:
    _check(width > 0 and layers > 0 and heads > 0, prefix, "width, layers and heads must be positive")
    _check(width % heads == 0, f"{prefix}.heads", f"width {width} is not divisible by heads {heads}")
    _check(mlp_ratio > 0, f"{prefix}.mlp_ratio", "must be positive")


@dataclass(frozen=True)
class TextConfig:
    """CLIP text transformer (causal), pooled at the EOT token."""

    vocab_size: int = CLIP_VOCAB_SIZE
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        _check_tower("text", self.width, self.layers, self.heads, self.mlp_ratio)
        _check(self.vocab_size > EOT_TOKEN_ID, "text.vocab_size", f"must exceed the EOT id {EOT_TOKEN_ID}")
        _check(self.context_length >= 2, "text.context_length", "must be at least 2")


@dataclass(frozen=True)
class VisionConfig:
    """CLIP ViT applied to each frame; the frame feature is the projected CLS token."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        _check_tower("vision", self.width, self.layers, self.heads, self.mlp_ratio)
        _check(
            self.patch_size > 0 and self.image_size % self.patch_size == 0,
            "vision.patch_size",
            f"must divide image_size {self.image_size}",
        )

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class AudioConfig:
    """ViT over one fbank slice [mel_bins, target_length] (AST-style patches), per-slice CLS feature."""

    mel_bins: int = 64
    target_length: int = 512
    sample_rate: int = 22050  # Hz of the audio its fbanks are computed from (VALOR: 22050); preprocessing follows it
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    type_token: bool = True  # CLIP4VLA's audio type token (verbal / nonverbal), appended after the patches

    def __post_init__(self) -> None:
        _check_tower("audio", self.width, self.layers, self.heads, self.mlp_ratio)
        p = self.patch_size
        _check(p > 0 and self.mel_bins % p == 0, "audio.patch_size", f"must divide mel_bins {self.mel_bins}")
        _check(self.target_length % p == 0, "audio.patch_size", f"must divide target_length {self.target_length}")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (frequency, time)."""
        return self.mel_bins // self.patch_size, self.target_length // self.patch_size


@dataclass(frozen=True)
class DecoderConfig:
    """Caption decoder; its vocabulary is the text vocabulary plus one ``[MASK]`` row (id = text vocab size)."""

    width: int = 512
    layers: int = 4
    heads: int = 8
    mlp_ratio: float = 4.0
    context_length: int = 77
    tie_lm_head: bool = True  # LM head weight = decoder token embedding
    max_frames: int = 32  # VALOR: learned per-frame / per-slice memory embeddings, (1, 32, width)
    max_audio_slices: int = 32
    # not in VALOR: the memory also holds the change between consecutive frames' features (f[t+1] - f[t], projected
    # and normalised on its own), so cross-attention, which averages memory items, can read the direction of motion
    # (bench/results/motion_probe.md: over frame items alone it does not learn left from right)
    frame_differences: bool = False

    def __post_init__(self) -> None:
        _check_tower("decoder", self.width, self.layers, self.heads, self.mlp_ratio)
        _check(self.context_length >= 2, "decoder.context_length", "must be at least 2")
        _check(self.max_frames > 0 and self.max_audio_slices > 0, "decoder.max_frames", "must be positive")


@dataclass(frozen=True)
class VLAConfig:
    """The whole model. ``embed_dim`` is the shared space of the contrastive features (CLIP's projections)."""

    embed_dim: int = 512
    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    quick_gelu: bool = False  # OpenAI CLIP weights were trained with QuickGELU
    init_logit_scale: float = 1 / 0.07

    def __post_init__(self) -> None:
        _check(self.embed_dim > 0, "embed_dim", "must be positive")
        _check(self.init_logit_scale > 0, "init_logit_scale", "must be positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        """Build from a parsed YAML mapping; unknown keys and wrong types raise ``ValueError`` naming the key."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks (CLIP's residual attention block, with optional cross-attention for the decoder)
# ---------------------------------------------------------------------------------------------------------------


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (``in_proj_weight`` [3W, W])."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, x: Tensor, memory: Tensor | None = None, memory_mask: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        """x [B, N, W]; memory [B, K, W] for cross-attention (else self-attention); memory_mask [B, K], True = keep."""
        width = x.shape[-1]
        if memory is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 × [B, N, W]
        else:
            q = F.linear(x, self.in_proj_weight[:width], self.in_proj_bias[:width])  # [B, N, W]
            k, v = F.linear(memory, self.in_proj_weight[width:], self.in_proj_bias[width:]).chunk(2, dim=-1)
        # [B, N, W] -> [B, heads, N, W / heads]
        q, k, v = (t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        mask = None if memory_mask is None else memory_mask[:, None, None, :]  # [B, 1, 1, K]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # [B, heads, N, W / heads]
        out: Tensor = self.out_proj(y.transpose(1, 2).flatten(2))  # [B, N, W]
        return out


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = QuickGELU() if quick_gelu else nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c_proj(self.gelu(self.c_fc(x)))
        return out


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to a memory, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool, cross: bool = False) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_cross = nn.LayerNorm(width) if cross else None
        self.cross_attn = Attention(width, heads) if cross else None
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, quick_gelu)

    def forward(
        self, x: Tensor, causal: bool = False, memory: Tensor | None = None, memory_mask: Tensor | None = None
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        if self.cross_attn is not None and self.ln_cross is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs a memory")
            x = x + self.cross_attn(self.ln_cross(x), memory=memory, memory_mask=memory_mask)
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out


class Transformer(nn.Module):
    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool, cross: bool = False
    ) -> None:
        super().__init__()
        blocks = [ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu, cross) for _ in range(layers)]
        # CLIP's initialisation (clip/model.py ``initialize_parameters``)
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        for block in blocks:
            for attn in (block.attn, block.cross_attn):
                if attn is not None:
                    nn.init.normal_(attn.in_proj_weight, std=attn_std)
                    nn.init.normal_(attn.out_proj.weight, std=proj_std)
                    nn.init.zeros_(attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        self.resblocks = nn.ModuleList(blocks)

    def forward(
        self, x: Tensor, causal: bool = False, memory: Tensor | None = None, memory_mask: Tensor | None = None
    ) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal, memory=memory, memory_mask=memory_mask)
        return x


# ---------------------------------------------------------------------------------------------------------------
# Towers
# ---------------------------------------------------------------------------------------------------------------


class TextFeatures(NamedTuple):
    token_feats: Tensor  # [B, L, C] projected per-token features (not normalised)
    token_mask: Tensor  # [B, L] bool, True up to and including the EOT token
    pooled: Tensor  # [B, C] the EOT token's feature (CLIP's text embedding)


class MaskedFeatures(NamedTuple):
    feats: Tensor  # [B, N, C]
    mask: Tensor  # [B, N] bool, True = a real frame / audio slice


def text_token_mask(tokens: Tensor) -> Tensor:
    """[B, L] ids -> [B, L] bool: positions up to and including the first EOT (the highest id, as CLIP pools)."""
    eot = tokens.argmax(dim=-1, keepdim=True)  # [B, 1]
    return torch.arange(tokens.shape[-1], device=tokens.device)[None, :] <= eot  # [B, L]


class TextEncoder(nn.Module):
    """CLIP text transformer: token + positional embedding, causal transformer, ln_final, text_projection."""

    def __init__(self, cfg: TextConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(self, tokens: Tensor) -> TextFeatures:
        """tokens [B, L] (L <= context_length) -> per-token features, mask and the EOT-pooled feature."""
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # [B, L, W]
        x = self.transformer(x, causal=True)
        x = self.ln_final(x) @ self.text_projection  # [B, L, C]
        eot = tokens.argmax(dim=-1)  # [B]
        pooled = x.gather(1, eot[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)  # [B, C]
        return TextFeatures(x, text_token_mask(tokens), pooled)


class VisionEncoder(nn.Module):
    """CLIP ViT applied to every frame: conv1 patches, class token, positions, ln_pre, transformer, ln_post, proj."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        scale = cfg.width**-0.5
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + cfg.grid**2, cfg.width))
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def forward(self, frames: Tensor) -> Tensor:
        """frames [B, F, 3, H, W] -> per-frame CLS features [B, F, C]."""
        x: Tensor = self.conv1(frames.flatten(0, 1))  # [B*F, W, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B*F, g*g, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B*F, 1, W]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding  # [B*F, 1 + g*g, W]
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x[:, 0]) @ self.proj  # [B*F, C]
        return x.view(frames.shape[0], frames.shape[1], -1)  # [B, F, C]


class AudioEncoder(nn.Module):
    """ViT over fbank patches (Conv2d 1→W, kernel = stride = patch), per-slice CLS features, plus CLIP4VLA's type token.

    Token sequence per slice: [CLS] + patches (frequency-major grid) + [type]; the type token is
    (1 - w)·type_embedding[0] + w·type_embedding[1] with a per-sample weight w (verbal 0, nonverbal 1, mixed 0.5).
    """

    def __init__(self, cfg: AudioConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        self.cfg = cfg
        scale = cfg.width**-0.5
        gm, gt = cfg.grid
        n_tokens = 1 + gm * gt + int(cfg.type_token)
        self.conv1 = nn.Conv2d(1, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(n_tokens, cfg.width))
        self.type_embedding = nn.Parameter(scale * torch.randn(2, cfg.width)) if cfg.type_token else None
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def type_token(self, type_weight: Tensor) -> Tensor:
        """type_weight [B] in [0, 1] -> the type token's input embedding [B, W]."""
        if self.type_embedding is None:
            raise ValueError("this audio encoder has no type token (audio.type_token is false)")
        w = type_weight.to(self.type_embedding.dtype)[:, None]  # [B, 1]
        return (1 - w) * self.type_embedding[0] + w * self.type_embedding[1]  # [B, W]

    def forward(self, fbank: Tensor, type_weight: Tensor | None = None) -> Tensor:
        """fbank [B, S, M, T], type_weight [B] (ignored without a type token) -> per-slice CLS features [B, S, C]."""
        batch, slices = fbank.shape[:2]
        x: Tensor = self.conv1(fbank.flatten(0, 1).unsqueeze(1))  # [B*S, 1, M, T] -> [B*S, W, M/p, T/p]
        x = x.flatten(2).transpose(1, 2)  # [B*S, gm*gt, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B*S, 1, W]
        parts = [cls, x]
        if self.type_embedding is not None:
            if type_weight is None:
                raise ValueError("encode_audio needs type_weight [B] when audio.type_token is on")
            tok = self.type_token(type_weight).to(x.dtype)  # [B, W]
            parts.append(tok[:, None, None, :].expand(-1, slices, 1, -1).flatten(0, 1))  # [B*S, 1, W]
        x = torch.cat(parts, dim=1) + self.positional_embedding  # [B*S, 1 + gm*gt (+1), W]
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x[:, 0]) @ self.proj  # [B*S, C]
        return x.view(batch, slices, -1)  # [B, S, C]

    @torch.no_grad()
    def init_from_vision(self, vision_state: Mapping[str, Tensor]) -> list[str]:
        """CLIP4VLA initialisation from a CLIP ViT state dict (our ``VisionEncoder`` names, no ``visual.`` prefix).

        ``conv1`` is averaged over the 3 input channels; the positional embedding's CLS row is copied and its 2-D patch
        grid is interpolated bilinearly to the fbank patch grid (the type token's row and ``type_embedding`` keep their
        fresh initialisation). Everything else must match in shape; nothing is changed unless everything fits.
        Returns the names that were set.
        """
        gm, gt = self.cfg.grid
        new: dict[str, Tensor] = {}
        for name, param in self.state_dict().items():
            if name not in vision_state:
                if name == "type_embedding":
                    continue
                raise KeyError(f"vision state has no {name!r} to initialise the audio tower from")
            src = vision_state[name].to(param.dtype)
            if name == "conv1.weight":
                src = src.mean(dim=1, keepdim=True)  # [W, 3, p, p] -> [W, 1, p, p]
            elif name == "positional_embedding":
                g = math.isqrt(src.shape[0] - 1)
                if g * g != src.shape[0] - 1:
                    raise ValueError(f"vision positional_embedding {tuple(src.shape)} is not CLS + a square grid")
                grid = src[1:].reshape(g, g, -1).permute(2, 0, 1)[None]  # [g*g, W] -> [1, W, g, g]
                grid = F.interpolate(grid, size=(gm, gt), mode="bilinear", align_corners=False)  # [1, W, gm, gt]
                grid = grid[0].permute(1, 2, 0).reshape(gm * gt, -1)  # [gm*gt, W], frequency-major like the patches
                src = torch.cat([src[:1], grid, param[1 + gm * gt :]], dim=0)  # keep the type token's row
            if src.shape != param.shape:
                raise ValueError(
                    f"audio.{name}: vision shape {tuple(vision_state[name].shape)} does not fit {tuple(param.shape)}"
                    " (the audio tower must have the vision tower's width, layers, heads and patch size)"
                )
            new[name] = src
        for name, src in new.items():
            self.state_dict()[name].copy_(src)
        return list(new)


# ---------------------------------------------------------------------------------------------------------------
# Fusion: VALOR's audio-visual "feature fusion" = concatenation along the sequence
# ---------------------------------------------------------------------------------------------------------------


def fuse_audiovisual(
    video: Tensor,
    audio: Tensor,
    has_audio: Tensor,
    video_mask: Tensor | None = None,
    audio_mask: Tensor | None = None,
) -> MaskedFeatures:
    """video [B, F, C] + audio [B, S, C] -> [B, F+S, C] with a mask [B, F+S]; clips without audio keep only frames."""
    if video_mask is None:
        video_mask = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)  # [B, F]
    a_mask = has_audio.bool()[:, None].expand(-1, audio.shape[1])  # [B, S]
    if audio_mask is not None:
        a_mask = a_mask & audio_mask.bool()
    return MaskedFeatures(torch.cat([video, audio], dim=1), torch.cat([video_mask.bool(), a_mask], dim=1))


# ---------------------------------------------------------------------------------------------------------------
# Caption decoder (VALOR MGC): causal self-attention + cross-attention to the video/audio memory, LM head
# ---------------------------------------------------------------------------------------------------------------


class CaptionDecoder(nn.Module):
    """Transformer decoder over caption tokens; cross-attends to projected frame / audio-slice features."""

    def __init__(self, cfg: DecoderConfig, text_vocab: int, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        self.vocab_size = text_vocab + 1  # + [MASK]
        self.token_embedding = nn.Embedding(self.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.width))
        # memory input (VALOR get_multimodal_forward_input_*): Linear + LayerNorm, per-item and modality embeddings
        self.memory_proj = nn.Linear(embed_dim, cfg.width)
        self.memory_ln = nn.LayerNorm(cfg.width)
        self.frame_embedding = nn.Parameter(0.02 * torch.randn(cfg.max_frames, cfg.width))
        self.slice_embedding = nn.Parameter(0.02 * torch.randn(cfg.max_audio_slices, cfg.width))
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(2, cfg.width))  # row 0 video, row 1 audio
        self.difference_proj: nn.Linear | None = None
        self.difference_ln: nn.LayerNorm | None = None
        self.difference_embedding: nn.Parameter | None = None
        if cfg.frame_differences:  # per-gap items: their own projection, norm and position embeddings
            self.difference_proj = nn.Linear(embed_dim, cfg.width)
            self.difference_ln = nn.LayerNorm(cfg.width)
            self.difference_embedding = nn.Parameter(0.02 * torch.randn(cfg.max_frames - 1, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu, cross=True)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.lm_head = nn.Linear(cfg.width, self.vocab_size, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        if cfg.tie_lm_head:
            self.lm_head.weight = self.token_embedding.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=cfg.width**-0.5)

    def memory(
        self,
        video: Tensor | None = None,
        audio: Tensor | None = None,
        video_mask: Tensor | None = None,
        audio_mask: Tensor | None = None,
    ) -> MaskedFeatures:
        """video [B, F, C] and/or audio [B, S, C] -> memory [B, F+S, D] and its mask (VALOR's concat variant); with
        ``frame_differences`` the F-1 frame-change items follow the frames: [B, 2F-1+S, D]."""
        parts: list[Tensor] = []
        masks: list[Tensor] = []
        for i, (x, m, pos) in enumerate(
            ((video, video_mask, self.frame_embedding), (audio, audio_mask, self.slice_embedding))
        ):
            if x is None:
                continue
            if x.shape[1] > pos.shape[0]:
                raise ValueError(f"{x.shape[1]} memory items exceed the decoder's {pos.shape[0]} position embeddings")
            h = self.memory_ln(self.memory_proj(x)) + pos[: x.shape[1]] + self.modality_embedding[i]  # [B, n, D]
            parts.append(h)
            masks.append(torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if m is None else m.bool())
            if i == 0 and self.difference_embedding is not None and x.shape[1] > 1:
                h, gap_mask = self._differences(x, masks[-1])
                parts.append(h)
                masks.append(gap_mask)
        if not parts:
            raise ValueError("the caption memory needs video, audio or both")
        return MaskedFeatures(torch.cat(parts, dim=1), torch.cat(masks, dim=1))

    def _differences(self, video: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """video [B, F, C], mask [B, F] -> F-1 items of the change between consecutive frames [B, F-1, D] and their
        mask (both frames present). The norm scales a small change (a shape moved a few pixels) to the size of any
        other memory item."""
        assert self.difference_proj is not None and self.difference_ln is not None
        assert self.difference_embedding is not None
        gaps = video.shape[1] - 1
        h = self.difference_ln(self.difference_proj(video[:, 1:] - video[:, :-1]))  # [B, F-1, D]
        h = h + self.difference_embedding[:gaps] + self.modality_embedding[0]
        return h, mask[:, 1:] & mask[:, :-1]

    def forward(
        self, tokens: Tensor, memory: Tensor, memory_mask: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        """tokens [B, L] (may hold [MASK]), memory [B, K, D], memory_mask [B, K] -> logits [B, L, V].

        With ``positions`` [B, L] bool only those positions go through the LM head: logits [n_selected, V].
        """
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # [B, L, D]
        x = self.ln_final(self.transformer(x, causal=True, memory=memory, memory_mask=memory_mask))
        logits: Tensor = self.lm_head(x if positions is None else x[positions])  # [B, L, V] or [n_selected, V]
        return logits


# ---------------------------------------------------------------------------------------------------------------
# The model: towers + fine-grained weight heads + temperature + decoder; encode_* surface, forward, generation
# ---------------------------------------------------------------------------------------------------------------


class VLAOutput(NamedTuple):
    text: TextFeatures
    video: Tensor  # [B, F, C]
    audio: Tensor  # [B, S, C]
    audiovisual: MaskedFeatures  # [B, F+S, C], [B, F+S]


def _weight_head(dim: int) -> nn.Sequential:
    """VALOR's per-token weight MLP for fine-grained similarity: Linear(C, C)–ReLU–Linear(C, 1)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))


def _repeating_tokens(seq: Tensor, n: int) -> tuple[list[int], list[int]]:
    """(row, token) pairs that would complete an n-gram already in that row of ``seq`` [N, k] (SOT first), or
    repeat the row's last token ("a a", "' '")."""
    rows: list[int] = []
    tokens: list[int] = []
    if seq.shape[1] < 2:
        return rows, tokens
    for r, t in enumerate(seq[:, 1:].tolist()):  # the generated tokens, SOT dropped
        rows.append(r)
        tokens.append(t[-1])
        prefix = t[len(t) - n + 1 :] if n > 1 else []
        for i in range(len(t) - n + 1):
            if t[i : i + n - 1] == prefix:
                rows.append(r)
                tokens.append(t[i + n - 1])
    return rows, tokens


class VLAModel(nn.Module):
    """Text, vision (per frame) and audio (per slice) towers in one CLIP space, plus a caption decoder."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.text = TextEncoder(cfg.text, c, cfg.quick_gelu)
        self.visual = VisionEncoder(cfg.vision, c, cfg.quick_gelu)
        self.audio = AudioEncoder(cfg.audio, c, cfg.quick_gelu)
        self.decoder = CaptionDecoder(cfg.decoder, cfg.text.vocab_size, c, cfg.quick_gelu)
        # learnable temperature as CLIP's log scale (init 1/0.07); losses clamp exp() of it
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.init_logit_scale)))
        # fine-grained (VALOR MGA) token weights; inputs are the L2-normalised features, outputs logits [B, N, 1]
        self.text_weight_head = _weight_head(c)
        self.video_weight_head = _weight_head(c)
        self.audio_weight_head = _weight_head(c)

    @property
    def mask_token_id(self) -> int:
        return self.decoder.vocab_size - 1

    # -- encoders ---------------------------------------------------------------------------------------------
    def encode_text(self, tokens: Tensor) -> TextFeatures:
        """tokens [B, L] -> TextFeatures(token_feats [B, L, C], token_mask [B, L], pooled [B, C])."""
        out: TextFeatures = self.text(tokens)
        return out

    def encode_video(self, frames: Tensor) -> Tensor:
        """frames [B, F, 3, H, W] (CLIP-normalised) -> per-frame features [B, F, C]."""
        out: Tensor = self.visual(frames)
        return out

    def encode_audio(self, fbank: Tensor, type_weight: Tensor | None = None) -> Tensor:
        """fbank [B, S, M, T] (normalised), type_weight [B] -> per-slice features [B, S, C]."""
        out: Tensor = self.audio(fbank, type_weight)
        return out

    def encode_audiovisual(
        self,
        frames: Tensor,
        fbank: Tensor,
        type_weight: Tensor | None,
        has_audio: Tensor,
        video_mask: Tensor | None = None,
        audio_mask: Tensor | None = None,
    ) -> MaskedFeatures:
        """-> frame and audio-slice features concatenated [B, F+S, C] with mask [B, F+S] (no audio: frames only)."""
        video, audio = self.encode_video(frames), self.encode_audio(fbank, type_weight)
        return fuse_audiovisual(video, audio, has_audio, video_mask, audio_mask)

    def forward(
        self,
        tokens: Tensor,
        frames: Tensor,
        fbank: Tensor,
        type_weight: Tensor | None,
        has_audio: Tensor,
        video_mask: Tensor | None = None,
        audio_mask: Tensor | None = None,
    ) -> VLAOutput:
        """All encodings of a batch; losses are computed outside (``avlops.task``)."""
        text = self.encode_text(tokens)
        video = self.encode_video(frames)
        audio = self.encode_audio(fbank, type_weight)
        return VLAOutput(text, video, audio, fuse_audiovisual(video, audio, has_audio, video_mask, audio_mask))

    # -- captioning ---------------------------------------------------------------------------------------------
    def caption_memory(
        self,
        video: Tensor | None = None,
        audio: Tensor | None = None,
        video_mask: Tensor | None = None,
        audio_mask: Tensor | None = None,
    ) -> MaskedFeatures:
        """Encoder features (video [B, F, C], audio [B, S, C]) -> decoder memory [B, K, D] and mask [B, K]."""
        return self.decoder.memory(video, audio, video_mask, audio_mask)

    def caption_logits(
        self, tokens: Tensor, memory: Tensor, memory_mask: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        """tokens [B, L], memory [B, K, D], memory_mask [B, K] -> logits [B, L, V] over the CLIP vocab + [MASK]
        (only at ``positions`` [B, L] bool when given: [n_selected, V], which spares the LM head the padding)."""
        logits: Tensor = self.decoder(tokens, memory, memory_mask, positions)
        return logits

    def _next_logprobs(self, seq: Tensor, memory: Tensor, memory_mask: Tensor | None, style: CaptionStyle) -> Tensor:
        """seq [N, k] -> log-probabilities of the next token [N, V] ([MASK], [SOT] and padding never chosen)."""
        if style is CaptionStyle.MASKED:
            seq = torch.cat([seq, torch.full_like(seq[:, :1], self.mask_token_id)], dim=1)  # [N, k+1]
        last = torch.zeros_like(seq, dtype=torch.bool)
        last[:, -1] = True  # only the last position goes through the LM head
        logits = self.caption_logits(seq, memory, memory_mask, last).float()  # [N, V]
        banned = [self.mask_token_id, SOT_TOKEN_ID, PAD_TOKEN_ID]
        logits[:, banned] = float("-inf")
        return logits.log_softmax(dim=-1)

    @torch.no_grad()
    def generate(
        self,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        max_len: int = 30,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        style: CaptionStyle = CaptionStyle.MASKED,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
    ) -> Tensor:
        """Decode captions: ``beam_size`` 1 is greedy, more is beam search ranked by log p / ((5 + len) / 6)^α (GNMT).

        memory [B, K, D], memory_mask [B, K] -> token ids [B, n] (n <= max_len): SOT first, every row ends with EOT
        (forced at ``max_len``), then padding. ``style`` must match how the decoder was trained. ``min_len``: EOT is
        banned until that many tokens follow SOT; ``no_repeat_ngram`` n > 0: no n-gram of tokens occurs twice in a
        caption (the token that would repeat one is banned, as in fairseq / Hugging Face generation) and no token
        follows itself ("a a", "' '": what an unsure decoder falls into).
        """
        if not 2 <= max_len <= self.cfg.decoder.context_length:
            raise ValueError(f"max_len must be in [2, {self.cfg.decoder.context_length}], got {max_len}")
        if not 0 <= min_len <= max_len - 2:
            raise ValueError(f"min_len must be in [0, max_len - 2 = {max_len - 2}], got {min_len}")
        if no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0, got {no_repeat_ngram}")
        batch, k = memory.shape[0], beam_size
        if k > 1:  # one copy of the memory per beam: [B, K, D] -> [B*k, K, D]
            memory = memory.repeat_interleave(k, dim=0)
            memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(k, dim=0)
        seq = torch.full((batch * k, 1), SOT_TOKEN_ID, dtype=torch.long, device=memory.device)  # [B*k, 1]
        score = torch.zeros(batch, k, device=memory.device)  # summed log-probabilities
        score[:, 1:] = float("-inf")  # all beams start equal: keep only the first alive at step 0
        length = torch.ones(batch, k, device=memory.device)  # tokens after SOT, EOT included
        done = torch.zeros(batch * k, dtype=torch.bool, device=memory.device)
        for step in range(max_len - 1):
            logp = self._next_logprobs(seq, memory, memory_mask, style)  # [B*k, V]
            if step < min_len:  # too short to end
                logp[:, EOT_TOKEN_ID] = -math.inf
            if no_repeat_ngram:
                ban_rows, ban_tokens = _repeating_tokens(seq, no_repeat_ngram)
                logp[ban_rows, ban_tokens] = -math.inf
            if step == max_len - 2:  # last slot: EOT only
                logp = torch.where(torch.arange(logp.shape[1], device=logp.device) == EOT_TOKEN_ID, 0.0, -math.inf)
                logp = logp.expand(batch * k, -1)
            # a finished row may only continue with padding, at no cost and no extra length
            pad_only = torch.full_like(logp, -math.inf)
            pad_only[:, PAD_TOKEN_ID] = 0.0
            logp = torch.where(done[:, None], pad_only, logp)
            vocab = logp.shape[1]
            if k == 1:
                token = logp.argmax(dim=-1)  # [B]
            else:
                cand = score.view(-1, 1) + logp  # [B*k, V]
                cand_len = length.view(-1, 1) + (~done).float()[:, None]  # [B*k, 1]
                ranked = cand / ((5 + cand_len) / 6) ** length_penalty  # [B*k, V]
                _, idx = ranked.view(batch, k * vocab).topk(k, dim=-1)  # [B, k] over flattened (beam, token)
                beam, token = idx // vocab, idx % vocab  # [B, k] each
                rows = (beam + torch.arange(batch, device=beam.device)[:, None] * k).view(-1)  # [B*k] source rows
                score = cand.view(batch, k * vocab).gather(1, idx)  # [B, k]
                length = cand_len.view(batch, k).gather(1, beam)
                seq, done, token = seq[rows], done[rows], token.view(-1)
            seq = torch.cat([seq, token[:, None]], dim=1)  # [B*k, step + 2]
            done = done | (token == EOT_TOKEN_ID)
            if bool(done.all()):
                break
        if k > 1:
            best = (score / ((5 + length) / 6) ** length_penalty).argmax(dim=-1)  # [B]
            seq = seq.view(batch, k, -1)[torch.arange(batch, device=seq.device), best]  # [B, n]
        return seq[:, : int((seq != PAD_TOKEN_ID).sum(dim=1).max())]  # drop columns that are padding in every row

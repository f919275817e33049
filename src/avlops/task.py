"""The pre-training task: one batch through :class:`VLAModel`, the losses of :mod:`avlops.losses`, weighted by config.

``compute_losses`` is what a training step calls; ``similarity_matrix`` and ``generate_captions`` are the same
scoring and decoding for evaluation, so training and evaluation cannot drift apart. In data-parallel training a
``gather`` function (``avlops.training.distributed.all_gather_with_grad``) makes the contrastive terms see the global
batch, so N ranks compute the same update as one process on the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlops.losses import (
    IGNORE_INDEX,
    caption_inputs,
    caption_loss,
    coarse_similarity,
    fine_similarity,
    info_nce,
    masked_mean,
    spec_augment,
)
from avlops.modality import ModalityGroup
from avlops.models.vla import (
    MaskedFeatures,
    TextFeatures,
    VLAModel,
    VLAOutput,
    fuse_audiovisual,
    text_token_mask,
)
from avlops.objective import CaptionObjective, ObjectiveConfig, Similarity, SpecAugmentConfig

__all__ = [
    "Batch",
    "Gather",
    "GroupFeatures",
    "LossOutput",
    "caption_memory",
    "compute_losses",
    "generate_captions",
    "group_features",
    "objective_for_data",
    "similarity_matrix",
    "trim_tokens",
]


@dataclass(frozen=True)
class Batch:
    """One training batch (B clips, one caption each)."""

    tokens: Tensor  # [B, L] int64 CLIP BPE ids
    frames: Tensor  # [B, F, 3, H, W] CLIP-normalised
    fbank: Tensor  # [B, S, M, T] normalised fbank slices (zeros without audio)
    has_audio: Tensor  # [B] bool
    audio_type_weight: Tensor  # [B] float in [0, 1] (avlops.models.vla.audio_type_weight)
    video_mask: Tensor | None = None  # [B, F] bool, False = padded frame
    audio_mask: Tensor | None = None  # [B, S] bool, False = padded slice

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            move(self.tokens),
            move(self.frames),
            move(self.fbank),
            move(self.has_audio),
            move(self.audio_type_weight),
            None if self.video_mask is None else move(self.video_mask),
            None if self.audio_mask is None else move(self.audio_mask),
        )


def trim_tokens(batch: Batch) -> Batch:
    """Drop the token columns after the longest caption's EOT ([B, 77] -> [B, L_max]); the results do not change."""
    length = int(text_token_mask(batch.tokens).sum(dim=1).max())
    return batch if length == batch.tokens.shape[1] else replace(batch, tokens=batch.tokens[:, :length])


#: All-gathers a tensor along dim 0 over the data-parallel ranks, in rank order; gradients reach each rank's slice.
Gather = Callable[[Tensor], Tensor]


class LossOutput(NamedTuple):
    total: Tensor  # scalar to backpropagate
    terms: dict[str, Tensor]  # detached scalars for logging: "mga", "mga/tv", …, "mgc", "mgc/tav", "audio_self"


class GroupFeatures(NamedTuple):
    feats: Tensor  # [B, N, C] frames, audio slices or both
    mask: Tensor  # [B, N] bool
    weight_logits: Tensor  # [B, N] fine-grained token-weight logits
    rows: Tensor | None  # [B'] clips that take part (T–A: clips with audio); None = all


def _weights(head: nn.Module, feats: Tensor) -> Tensor:
    """Per-token weight logits [B, N] from the model's head on L2-normalised features [B, N, C] (VALOR)."""
    logits: Tensor = head(F.normalize(feats, dim=-1))  # [B, N, 1]
    return logits.squeeze(-1)


def _masks(batch: Batch, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
    """Video mask [B, F] and audio mask [B, S] (slices of clips without audio are masked)."""
    video_mask = batch.video_mask.bool() if batch.video_mask is not None else video.new_ones(video.shape[:2]).bool()
    audio_mask = batch.has_audio.bool()[:, None].expand(-1, audio.shape[1])  # [B, S]
    if batch.audio_mask is not None:
        audio_mask = audio_mask & batch.audio_mask.bool()
    return video_mask, audio_mask


def _rows(present: Tensor) -> Tensor | None:
    """Indices [B'] of the clips that have a group's input [B] bool; None when every clip has it."""
    return None if bool(present.all()) else present.nonzero().squeeze(-1)


def _take(rows: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    return tensors if rows is None else tuple(t[rows] for t in tensors)


def group_features(model: VLAModel, out: VLAOutput, batch: Batch, group: ModalityGroup) -> GroupFeatures:
    """The non-text side of a group: its features, mask, token-weight logits, and which clips take part (clips
    without the group's input — no frames for T–V, no sound for T–A, neither for T–AV — are left out)."""
    video_mask, audio_mask = _masks(batch, out.video, out.audio)
    if group is ModalityGroup.T_V:
        rows = _rows(video_mask.any(dim=1))
        v, m = _take(rows, out.video, video_mask)  # [B', F, C], [B', F]
        return GroupFeatures(v, m, _weights(model.video_weight_head, v), rows)
    if group is ModalityGroup.T_A:
        rows = batch.has_audio.bool().nonzero().squeeze(-1)  # [B']
        a = out.audio[rows]  # [B', S, C]
        return GroupFeatures(a, audio_mask[rows], _weights(model.audio_weight_head, a), rows)
    weights = torch.cat([_weights(model.video_weight_head, out.video), _weights(model.audio_weight_head, out.audio)], 1)
    rows = _rows(out.audiovisual.mask.any(dim=1))
    feats, mask, weights = _take(rows, out.audiovisual.feats, out.audiovisual.mask, weights)
    return GroupFeatures(feats, mask, weights, rows)  # [B', F+S, C], [B', F+S]


def similarity_matrix(model: VLAModel, text: TextFeatures, other: GroupFeatures, cfg: ObjectiveConfig) -> Tensor:
    """Text [Nt] × group side [Nx] similarity [Nt, Nx] as the objective defines it (fine or coarse)."""
    if cfg.similarity is Similarity.COARSE:
        return coarse_similarity(text.pooled, other.feats, other.mask)
    text_w = _weights(model.text_weight_head, text.token_feats) if cfg.weighted_tokens else None
    other_w = other.weight_logits if cfg.weighted_tokens else None
    return fine_similarity(text.token_feats, text.token_mask, other.feats, other.mask, text_w, other_w)


def _select(text: TextFeatures, rows: Tensor | None) -> TextFeatures:
    return text if rows is None else TextFeatures(*(t[rows] for t in text))


def caption_memory(
    model: VLAModel, video: Tensor, audio: Tensor, batch: Batch, group: ModalityGroup, *, keep_all: bool = False
) -> tuple[MaskedFeatures, Tensor | None]:
    """Decoder memory for a group from video [B, F, C] and audio [B, S, C] features (T–AV: VALOR's concat), and
    the clips it covers (None = all): T–A only clips with audio; T–V and T–AV only clips with some input to
    caption from, unless ``keep_all`` (generation answers every clip it is given)."""
    video_mask, audio_mask = _masks(batch, video, audio)
    if group is ModalityGroup.T_V:
        rows = None if keep_all else _rows(video_mask.any(dim=1))
        v, m = _take(rows, video, video_mask)
        return model.caption_memory(video=v, video_mask=m), rows
    if group is ModalityGroup.T_A:
        rows = batch.has_audio.bool().nonzero().squeeze(-1)  # [B']
        return model.caption_memory(audio=audio[rows], audio_mask=audio_mask[rows]), rows
    rows = None if keep_all else _rows(video_mask.any(dim=1) | audio_mask.any(dim=1))
    v, a, vm, am = _take(rows, video, audio, video_mask, audio_mask)
    return model.caption_memory(v, a, vm, am), rows


def _gather_outputs(out: VLAOutput, batch: Batch, gather: Gather) -> tuple[VLAOutput, Batch]:
    """Every rank's encodings and masks, concatenated in rank order (the global batch) for the contrastive terms.

    Text features are padded to the longest rank's token length (padding is masked). The returned batch carries the
    gathered tokens, has_audio, type weights and masks; its frames and fbank are empty (the contrastive terms read
    features, not inputs).
    """
    length = int(gather(torch.tensor([batch.tokens.shape[1]], device=batch.tokens.device)).max())
    pad = length - batch.tokens.shape[1]
    video_mask, audio_mask = _masks(batch, out.video, out.audio)

    def flag(t: Tensor) -> Tensor:  # bool over uint8: not every backend gathers bool tensors
        return gather(t.to(torch.uint8)).bool()

    token_feats = F.pad(out.text.token_feats, (0, 0, 0, pad))  # [b, L, C] -> [b, L_max, C], zeros
    text = TextFeatures(gather(token_feats), flag(F.pad(out.text.token_mask, (0, pad))), gather(out.text.pooled))
    video, audio = gather(out.video), gather(out.audio)  # [B, F, C], [B, S, C]
    g_batch = Batch(
        tokens=gather(F.pad(batch.tokens, (0, pad))),
        frames=batch.frames.new_empty(0),
        fbank=batch.fbank.new_empty(0),
        has_audio=flag(batch.has_audio),
        audio_type_weight=gather(batch.audio_type_weight),
        video_mask=flag(video_mask),
        audio_mask=flag(batch.audio_mask if batch.audio_mask is not None else torch.ones_like(audio_mask)),
    )
    fused = fuse_audiovisual(video, audio, g_batch.has_audio, g_batch.video_mask, g_batch.audio_mask)
    return VLAOutput(text, video, audio, fused), g_batch


def compute_losses(
    model: VLAModel,
    batch: Batch,
    cfg: ObjectiveConfig,
    generator: torch.Generator | None = None,
    gather: Gather | None = None,
) -> LossOutput:
    """total = alpha·mean_g InfoNCE(T–g) + caption.weight·mean_g CE(caption | g) (+ audio_self.weight·L_audio).

    Groups that need audio use only the clips that have it and are skipped when fewer than 2 (contrastive) or 0
    (caption) clips do. ``generator`` (CPU) drives caption masking and SpecAugment, for reproducible steps.

    With ``gather`` (data parallel, one call per rank) the contrastive terms are computed over the global batch, the
    same value on every rank, and each caption term is this rank's sum of token losses times world size / global
    target count, so the mean of the ranks' gradients (what DDP applies) is the global batch's gradient. The
    audio_self term stays per rank.
    """
    batch = trim_tokens(batch)
    out = model(
        batch.tokens,
        batch.frames,
        batch.fbank,
        batch.audio_type_weight,
        batch.has_audio,
        batch.video_mask,
        batch.audio_mask,
    )
    terms: dict[str, Tensor] = {}
    total = model.logit_scale * 0.0  # keeps a graph even if every term is skipped
    scale = model.logit_scale.exp().clamp(max=cfg.max_logit_scale)

    c_out, c_batch = (out, batch) if gather is None or not cfg.groups else _gather_outputs(out, batch, gather)
    mga = _alignment_terms(model, c_out, c_batch, cfg, scale, terms)
    if mga:
        terms["mga"] = torch.stack(mga).mean()
        total = total + cfg.alpha * terms["mga"]

    if cfg.caption is not None:
        mgc = _caption_terms(model, out, batch, cfg.caption, generator, gather, terms)
        if mgc:
            terms["mgc"] = torch.stack(mgc).mean()
            total = total + cfg.caption.weight * terms["mgc"]

    if cfg.audio_self is not None:
        loss = _audio_self_term(model, out, batch, cfg.audio_self.spec_augment, generator, scale)
        if loss is not None:
            terms["audio_self"] = loss
            total = total + cfg.audio_self.weight * loss

    return LossOutput(total, {k: v.detach() for k, v in terms.items()})


def _alignment_terms(
    model: VLAModel, out: VLAOutput, batch: Batch, cfg: ObjectiveConfig, scale: Tensor, terms: dict[str, Tensor]
) -> list[Tensor]:
    """InfoNCE of text against each group (MGA), into ``terms``; a group with fewer than 2 clips is skipped."""
    mga = []
    for group in cfg.groups:
        other = group_features(model, out, batch, group)
        if other.feats.shape[0] < 2:
            continue
        loss = info_nce(similarity_matrix(model, _select(out.text, other.rows), other, cfg), scale)
        terms[f"mga/{group.value}"] = loss
        mga.append(loss)
    return mga


def _caption_terms(
    model: VLAModel,
    out: VLAOutput,
    batch: Batch,
    cfg: CaptionObjective,
    generator: torch.Generator | None,
    gather: Gather | None,
    terms: dict[str, Tensor],
) -> list[Tensor]:
    """Caption cross-entropy from each group's memory (MGC), into ``terms`` (see :func:`compute_losses` for how
    ranks share it)."""
    mgc = []
    for group in cfg.groups:
        memory, rows = caption_memory(model, out.video, out.audio, batch, group)
        tokens = batch.tokens if rows is None else batch.tokens[rows]
        loss = model.logit_scale * 0.0  # this rank's term when it has no clip for the group (gather only)
        n_targets = loss.detach()
        if tokens.shape[0] > 0:
            inputs, labels = caption_inputs(tokens, cfg, model.mask_token_id, generator)
            targets = labels != IGNORE_INDEX  # [B', L']: the LM head runs only where there is a label
            logits = model.caption_logits(inputs, memory.feats, memory.mask, targets)  # [n_targets, V]
            loss = caption_loss(logits, labels[targets], cfg.label_smoothing)
            n_targets = targets.sum().to(loss.dtype)
        if gather is not None:  # every rank joins the count, even one without clips for the group
            counts = gather(n_targets.reshape(1))  # [world]
            if float(counts.sum()) == 0:
                continue
            loss = loss * (n_targets * counts.numel() / counts.sum())
        elif tokens.shape[0] == 0:
            continue
        terms[f"mgc/{group.value}"] = loss
        mgc.append(loss)
    return mgc


def _audio_self_term(
    model: VLAModel,
    out: VLAOutput,
    batch: Batch,
    augment: SpecAugmentConfig,
    generator: torch.Generator | None,
    scale: Tensor,
) -> Tensor | None:
    """InfoNCE of each clip's audio against its SpecAugmented copy; None with fewer than 2 clips with audio."""
    _, audio_mask = _masks(batch, out.video, out.audio)
    rows = batch.has_audio.bool().nonzero().squeeze(-1)
    if rows.numel() < 2:
        return None
    if generator is None:  # fresh masks each call, drawn from the global RNG
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    augmented = spec_augment(batch.fbank[rows], generator, augment)
    z = masked_mean(out.audio[rows], audio_mask[rows])  # [B', C]
    z_aug = masked_mean(model.encode_audio(augmented, batch.audio_type_weight[rows]), audio_mask[rows])
    return info_nce(F.normalize(z, dim=-1) @ F.normalize(z_aug, dim=-1).T, scale)


def objective_for_data(cfg: ObjectiveConfig, has_video: bool, has_audio: bool) -> tuple[ObjectiveConfig, list[str]]:
    """``cfg`` without the loss terms the data gives no input to (T–V and captions from T–V without any video, T–A,
    captions from T–A and the audio self-term without any sound), and a line per term left out, saying why.

    Such a term would be a constant (InfoNCE over identical scores sits at ln B) added to the total; left out, the
    run says so once. Raises ``ValueError`` when nothing is left to train.
    """
    missing = {ModalityGroup.T_V: None if has_video else "video", ModalityGroup.T_A: None if has_audio else "audio"}
    missing[ModalityGroup.T_AV] = None if has_video or has_audio else "video or audio"
    skipped = [f"mga/{g.value}: no clip has {missing[g]}" for g in cfg.groups if missing[g]]
    groups = tuple(g for g in cfg.groups if not missing[g])
    caption = cfg.caption
    if caption is not None:
        skipped += [f"mgc/{g.value}: no clip has {missing[g]}" for g in caption.groups if missing[g]]
        kept = tuple(g for g in caption.groups if not missing[g])
        caption = replace(caption, groups=kept) if kept else None
    audio_self = cfg.audio_self
    if audio_self is not None and not has_audio:
        skipped.append("audio_self: no clip has audio")
        audio_self = None
    if not skipped:
        return cfg, []
    if not groups and caption is None and audio_self is None:
        raise ValueError("the objective has no term left that this data has input for: " + "; ".join(skipped))
    return replace(cfg, groups=groups, caption=caption, audio_self=audio_self), skipped


@torch.no_grad()
def generate_captions(
    model: VLAModel,
    batch: Batch,
    cfg: ObjectiveConfig,
    group: ModalityGroup = ModalityGroup.T_AV,
    max_len: int = 30,
    beam_size: int = 3,
    *,
    length_penalty: float = 0.6,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
) -> Tensor:
    """Caption every clip of ``batch`` from ``group``'s memory, decoding the way the objective trained the decoder
    (``VLAModel.generate``'s controls).

    Returns token ids [B', n] (SOT … EOT, zero-padded); for T–A only the clips with audio.
    """
    style = (cfg.caption or CaptionObjective()).style
    video = model.encode_video(batch.frames)  # [B, F, C]
    audio = model.encode_audio(batch.fbank, batch.audio_type_weight)  # [B, S, C]
    memory, _ = caption_memory(model, video, audio, batch, group, keep_all=True)
    return model.generate(
        memory.feats,
        memory.mask,
        max_len=max_len,
        beam_size=beam_size,
        length_penalty=length_penalty,
        style=style,
        min_len=min_len,
        no_repeat_ngram=no_repeat_ngram,
    )

"""The model's own scoring for evaluation: encode a split once, then score text against each modality group.

Scores come from :func:`avlops.task.group_features` and :func:`avlops.task.similarity_matrix`, the functions the
training loss uses (fine-grained token-wise similarity with learned token weights, or coarse pooled similarity, as
the objective says), so training and evaluation cannot score differently. Features of every caption and clip are
held in memory (Nt × L × C and Nc × (F + S) × C floats); the score matrix is produced one tile at a time for
:func:`avlops.evaluation.retrieval.rank_retrieval`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from avlops.evaluation.dataset import EvalSet
from avlops.evaluation.retrieval import Scorer
from avlops.modality import Modality, ModalityGroup
from avlops.models.vla import TextFeatures, VLAModel, VLAOutput, fuse_audiovisual
from avlops.objective import ObjectiveConfig
from avlops.task import Batch, GroupFeatures, group_features, similarity_matrix

__all__ = ["Encoded", "RetrievalTask", "dsl_scale", "encode", "make_scorer", "retrieval_task"]


@dataclass(frozen=True)
class Encoded:
    """Every caption's and clip's features on the model's device."""

    text: TextFeatures  # token_feats [Nt, L, C], token_mask [Nt, L], pooled [Nt, C]
    video: Tensor  # [Nc, F, C]; zeros when no clip has video
    audio: Tensor  # [Nc, S, C]; zeros when no clip has audio


@dataclass(frozen=True)
class RetrievalTask:
    """One modality group's gallery (clips), queries (their captions) and scorer."""

    modality: Modality
    clips: Tensor  # [Ng] clip indices of the gallery
    queries: Tensor  # [Nq] caption indices
    targets: Tensor  # [Nq] gallery position of each query's clip
    score: Scorer  # (query rows, gallery rows) -> [q, g] on the CPU


@torch.no_grad()
def encode(model: VLAModel, data: EvalSet, batch_size: int, progress: bool = False) -> Encoded:
    """Encode every caption and every clip of ``data`` (video only if some clip has video, audio likewise)."""
    device = next(model.parameters()).device
    texts = []
    for s in tqdm(
        range(0, data.tokens.shape[0], 4 * batch_size), desc="encode text", disable=None if progress else True
    ):
        texts.append(model.encode_text(data.tokens[s : s + 4 * batch_size].to(device)))
    text = TextFeatures(*(torch.cat(parts) for parts in zip(*texts, strict=True)))
    want_video, want_audio = bool(data.has_video.any()), bool(data.has_audio.any())
    videos, audios = [], []
    bar = tqdm(total=len(data), desc="encode clips", unit="clip", disable=None if progress else True)
    for idx, batch in data.batches(torch.arange(len(data)), batch_size):
        b = batch.to(device)
        if want_video:
            videos.append(model.encode_video(b.frames))  # [b, F, C]
        if want_audio:
            audios.append(model.encode_audio(b.fbank, b.audio_type_weight))  # [b, S, C]
        bar.update(len(idx))
    bar.close()
    c = model.cfg.embed_dim
    n_frames, n_slices = data.video_mask.shape[1], data.audio_mask.shape[1]
    video = torch.cat(videos) if videos else torch.zeros(len(data), n_frames, c, device=device)
    audio = torch.cat(audios) if audios else torch.zeros(len(data), n_slices, c, device=device)
    return Encoded(text, video, audio)


def _gallery(model: VLAModel, enc: Encoded, data: EvalSet, clips: Tensor, group: ModalityGroup) -> GroupFeatures:
    """The group side of ``clips``: features, mask and token-weight logits, through :func:`group_features`."""
    video, audio = enc.video[clips], enc.audio[clips]
    dev = video.device
    batch = Batch(
        tokens=torch.zeros(len(clips), 0, dtype=torch.long, device=dev),
        frames=video.new_empty(0),
        fbank=audio.new_empty(0),
        has_audio=data.has_audio[clips].to(dev),
        audio_type_weight=data.audio_type_weight[clips].to(dev),
        video_mask=data.video_mask[clips].to(dev),
        audio_mask=data.audio_mask[clips].to(dev),
    )
    fused = fuse_audiovisual(video, audio, batch.has_audio, batch.video_mask, batch.audio_mask)
    out = group_features(model, VLAOutput(enc.text, video, audio, fused), batch, group)
    if out.rows is not None and out.rows.numel() != len(clips):
        raise ValueError(f"{group.value}: every gallery clip must take part (clips without audio in a T-A gallery?)")
    return GroupFeatures(out.feats, out.mask, out.weight_logits, None)


def retrieval_task(
    model: VLAModel, objective: ObjectiveConfig, enc: Encoded, data: EvalSet, modality: Modality
) -> RetrievalTask:
    """Gallery = the clips the group can use; queries = all their captions; scores = the training similarity."""
    clips = data.clips_with(modality)  # [Ng]
    with torch.no_grad():
        other = _gallery(model, enc, data, clips, modality.group)
    caption_clip = data.caption_clip  # [Nt]
    position = torch.full((len(data),), -1, dtype=torch.long)
    position[clips] = torch.arange(len(clips))
    queries = (position[caption_clip] >= 0).nonzero().squeeze(-1)  # [Nq] captions of gallery clips
    targets = position[caption_clip[queries]]
    return RetrievalTask(modality, clips, queries, targets, make_scorer(model, objective, enc.text, other, queries))


def make_scorer(
    model: VLAModel, objective: ObjectiveConfig, text: TextFeatures, gallery: GroupFeatures, queries: Tensor
) -> Scorer:
    """Tiles of the score matrix: text rows ``queries`` [Nq] (indices into ``text``) × the ``gallery`` items,
    scored with :func:`avlops.task.similarity_matrix`; tiles come back on the CPU."""
    rows_on_device = queries.to(text.pooled.device)

    @torch.no_grad()
    def score(q: slice, g: slice) -> Tensor:
        rows = rows_on_device[q]
        tile_text = TextFeatures(text.token_feats[rows], text.token_mask[rows], text.pooled[rows])
        tile = GroupFeatures(gallery.feats[g], gallery.mask[g], gallery.weight_logits[g], None)
        return similarity_matrix(model, tile_text, tile, objective).float().cpu()  # [q, g]

    return score


def dsl_scale(model: VLAModel, objective: ObjectiveConfig) -> float:
    """The dual-softmax temperature: the model's logit scale, capped as the loss caps it (VALOR: 1 / temp)."""
    return float(model.logit_scale.detach().exp().clamp(max=objective.max_logit_scale))

"""Losses as functions; the typed objective config that selects and weights them is :mod:`avlops.objective`.

* MGA (VALOR §1.5): grouped contrastive alignment of text with video (T–V), audio (T–A) and audio+video (T–AV),
  with fine-grained token-wise similarity (max over the other side's tokens, softmax-weighted mean) or coarse pooled
  similarity; symmetric InfoNCE with the model's learnable, clamped logit scale.
* CLIP4VLA's intra-modal audio term: audio vs SpecAugment-masked audio (:func:`spec_augment`).
* MGC (VALOR §1.6): caption cross-entropy, masked-LM style (60 % of tokens masked) or plain next-token.
* Total: ``alpha * L_MGA + L_MGC (+ w * L_audio)``, ``alpha = 1.5`` (VALOR Eq. 7).

Learnable parts (token-weight heads, logit scale) live in the model; these functions take them as tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avlops.models.vla import SOT_TOKEN_ID, text_token_mask
from avlops.objective import CaptionObjective, CaptionStyle, SpecAugmentConfig

__all__ = [
    "IGNORE_INDEX",
    "caption_inputs",
    "caption_loss",
    "coarse_similarity",
    "fine_similarity",
    "info_nce",
    "mask_caption_tokens",
    "masked_mean",
    "spec_augment",
]

IGNORE_INDEX = -100  # label of positions without a caption target
_MASK_FILL = -1e4  # below any cosine similarity, finite in fp16


# ---------------------------------------------------------------------------------------------------------------
# Similarities and InfoNCE
# ---------------------------------------------------------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """x [B, N, C], mask [B, N] -> mean over the kept items [B, C] (rows with none kept give zeros)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype)[..., None]  # [B, N, 1]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def _token_weights(logits: Tensor | None, mask: Tensor) -> Tensor:
    """Per-token weight logits [B, N] (None = uniform) -> masked softmax [B, N]."""
    if logits is None:
        logits = torch.zeros(mask.shape, device=mask.device)
    return logits.float().masked_fill(~mask, float("-inf")).softmax(dim=-1).nan_to_num(0.0)


def fine_similarity(
    a: Tensor,
    a_mask: Tensor,
    b: Tensor,
    b_mask: Tensor,
    a_weight: Tensor | None = None,
    b_weight: Tensor | None = None,
    chunk: int = 256,
) -> Tensor:
    """VALOR's fine-grained similarity (``compute_fine_matrix_slice``) between every row of ``a`` and of ``b``.

    a [Na, La, C] with a_mask [Na, La], b [Nb, Lb, C] with b_mask [Nb, Lb]; weights are per-token logits
    ([Na, La], [Nb, Lb]; None = uniform). Features are L2-normalised here. For each pair: a→b = Σ_t softmax(w_a)_t ·
    max_v cos(a_t, b_v); b→a likewise; score = (a→b + b→a) / 2. Returns [Na, Nb]. ``a`` is processed ``chunk`` rows at
    a time to bound the [chunk, Nb, La, Lb] intermediate.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    wa, wb = _token_weights(a_weight, a_mask), _token_weights(b_weight, b_mask)  # [Na, La], [Nb, Lb]
    rows = []
    for s in range(0, a.shape[0], chunk):
        cos = torch.einsum("ilc,jmc->ijlm", a[s : s + chunk], b)  # [n, Nb, La, Lb]
        a2b = cos.masked_fill(~b_mask[None, :, None, :], _MASK_FILL).amax(dim=-1)  # [n, Nb, La]
        a2b = (a2b * wa[s : s + chunk, None, :]).sum(dim=-1)  # [n, Nb]
        b2a = cos.masked_fill(~a_mask[s : s + chunk, None, :, None], _MASK_FILL).amax(dim=-2)  # [n, Nb, Lb]
        b2a = (b2a * wb[None]).sum(dim=-1)  # [n, Nb]
        rows.append((a2b + b2a) / 2)
    return torch.cat(rows, dim=0)  # [Na, Nb]


def coarse_similarity(a: Tensor, b: Tensor, b_mask: Tensor | None = None) -> Tensor:
    """Cosine similarity of pooled features: a [Na, C] (text EOT), b [Nb, Lb, C] mean-pooled over b_mask -> [Na, Nb]."""
    return F.normalize(a, dim=-1) @ F.normalize(masked_mean(b, b_mask), dim=-1).T


def info_nce(sim: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE over a square similarity [N, N] whose diagonal holds the positives."""
    logits = sim * logit_scale  # [N, N]
    target = torch.arange(sim.shape[0], device=sim.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ---------------------------------------------------------------------------------------------------------------
# SpecAugment (CLIP4VLA's intra-modal audio augmentation)
# ---------------------------------------------------------------------------------------------------------------


def _band_mask(n_rows: int, size: int, masks: int, width: int, generator: torch.Generator) -> Tensor:
    """[n_rows, size] bool: the union of ``masks`` random bands of width 0..width per row."""
    out = torch.zeros(n_rows, size, dtype=torch.bool)
    pos = torch.arange(size)
    for _ in range(masks):
        w = (torch.rand(n_rows, generator=generator) * (width + 1)).long().clamp(max=size)  # [n]
        start = (torch.rand(n_rows, generator=generator) * (size - w + 1)).long()  # [n]
        out |= (pos[None] >= start[:, None]) & (pos[None] < (start + w)[:, None])
    return out


def spec_augment(fbank: Tensor, generator: torch.Generator, cfg: SpecAugmentConfig | None = None) -> Tensor:
    """Frequency + time masking of fbank slices [..., M, T]; each slice gets its own masks, drawn from ``generator``
    (a CPU generator: the same seed gives the same masks on any device). Returns a new tensor."""
    cfg = cfg or SpecAugmentConfig()
    mel, frames = fbank.shape[-2:]
    flat = fbank.reshape(-1, mel, frames)  # [N, M, T]
    f_mask = _band_mask(flat.shape[0], mel, cfg.freq_masks, cfg.freq_width, generator)  # [N, M]
    t_mask = _band_mask(flat.shape[0], frames, cfg.time_masks, cfg.time_width, generator)  # [N, T]
    mask = (f_mask[:, :, None] | t_mask[:, None, :]).to(fbank.device)  # [N, M, T]
    return flat.masked_fill(mask, cfg.value).reshape(fbank.shape)


# ---------------------------------------------------------------------------------------------------------------
# Captioning (MGC)
# ---------------------------------------------------------------------------------------------------------------


def mask_caption_tokens(
    tokens: Tensor, prob: float, mask_token_id: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """VALOR's ``TokenMasker``: tokens [B, L] -> (inputs [B, L], labels [B, L]).

    Candidates are the caption's tokens after SOT up to and including EOT (so the decoder learns to stop). Each is
    selected with probability ``prob``, at least one per caption; a selected token becomes ``[MASK]`` (80 %), a
    random CLIP token (10 %) or stays (10 %). Labels hold the original id at selected positions, else IGNORE_INDEX.
    """
    dev = tokens.device

    def rand(*shape: int) -> Tensor:
        return (
            torch.rand(*shape, generator=generator).to(dev) if generator is not None else torch.rand(*shape, device=dev)
        )

    cand = text_token_mask(tokens) & (torch.arange(tokens.shape[1], device=dev)[None] > 0)  # [B, L]
    r = rand(*tokens.shape)
    chosen = cand & (r < prob)
    # captions where nothing was drawn: take the candidate with the smallest draw
    first = r.masked_fill(~cand, 2.0).argmin(dim=-1)  # [B]
    none = ~chosen.any(dim=-1) & cand.any(dim=-1)  # [B]
    chosen[none, first[none]] = True
    action = rand(*tokens.shape)
    random_ids = (rand(*tokens.shape) * (SOT_TOKEN_ID - 1)).long() + 1  # [1, SOT): ordinary BPE tokens
    inputs = torch.where(chosen & (action < 0.8), mask_token_id, tokens)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    labels = tokens.masked_fill(~chosen, IGNORE_INDEX)
    return inputs, labels


def caption_inputs(
    tokens: Tensor, cfg: CaptionObjective, mask_token_id: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Decoder inputs and labels for one caption batch [B, L]: masked LM (same length) or next-token (length L-1)."""
    if cfg.style is CaptionStyle.MASKED:
        return mask_caption_tokens(tokens, cfg.mask_prob, mask_token_id, generator)
    keep = text_token_mask(tokens)[:, 1:]  # [B, L-1]: targets up to and including EOT
    return tokens[:, :-1], tokens[:, 1:].masked_fill(~keep, IGNORE_INDEX)


def caption_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits [..., V] against labels [...] (IGNORE_INDEX skipped), e.g. [B, L, V] and [B, L]."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
    )

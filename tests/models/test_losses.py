"""Loss functions: InfoNCE, fine/coarse similarity, SpecAugment, caption masking, objective config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avlops.losses import (
    IGNORE_INDEX,
    caption_inputs,
    coarse_similarity,
    fine_similarity,
    info_nce,
    mask_caption_tokens,
    spec_augment,
)
from avlops.modality import ModalityGroup
from avlops.models.vla import EOT_TOKEN_ID, SOT_TOKEN_ID
from avlops.objective import CaptionObjective, CaptionStyle, ObjectiveConfig, Similarity, SpecAugmentConfig

MASK_ID = 49408


def test_info_nce_is_near_zero_for_perfect_alignment_at_low_temperature() -> None:
    feats = torch.eye(8)  # orthonormal: sim = identity
    assert info_nce(feats @ feats.T, 100.0) < 1e-3
    assert info_nce(feats @ feats.T, 1.0) > 1.0  # high temperature cannot be confident
    shuffled = feats @ feats[torch.randperm(8, generator=torch.Generator().manual_seed(0))].T
    assert info_nce(shuffled, 100.0) > 10.0


def test_info_nce_is_symmetric_mean_of_both_directions() -> None:
    sim = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    target = torch.arange(5)
    expected = (F.cross_entropy(sim * 3, target) + F.cross_entropy(sim.T * 3, target)) / 2
    torch.testing.assert_close(info_nce(sim, torch.tensor(3.0)), expected)


def test_fine_similarity_matches_a_hand_computation() -> None:
    # two texts × two videos, two tokens each, C = 2
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [5.0, 5.0]]])
    a_mask = torch.tensor([[True, True], [True, False]])  # text 1's second token is padding
    a_weight = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # text 0: softmax -> [0.25, 0.75]
    b = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]]])  # video 0's first frame is not unit
    b_mask = torch.ones(2, 2, dtype=torch.bool)
    # (t0, v0): cos [[1, 0], [0, 1]]; t→v: .25·1 + .75·1 = 1; v→t: mean(1, 1) = 1          -> 1
    # (t0, v1): cos [[.6, -1], [.8, 0]]; t→v: .25·.6 + .75·.8 = .75; v→t: mean(.8, 0) = .4 -> .575
    # (t1, v0): only token 0 counts: cos [1, 0]; t→v: 1; v→t: mean(1, 0) = .5             -> .75
    # (t1, v1): cos [.6, -1]; t→v: .6; v→t: mean(.6, -1) = -.2                             -> .2
    expected = torch.tensor([[1.0, 0.575], [0.75, 0.2]])
    torch.testing.assert_close(fine_similarity(a, a_mask, b, b_mask, a_weight, None), expected)
    torch.testing.assert_close(fine_similarity(a, a_mask, b, b_mask, a_weight, None, chunk=1), expected)


def test_fine_similarity_masks_frames_and_weights() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 8, generator=g), torch.randn(5, 6, 8, generator=g)
    a_mask = torch.ones(3, 4, dtype=torch.bool)
    b_mask = torch.ones(5, 6, dtype=torch.bool)
    b_mask[:, 4:] = False
    base = fine_similarity(a, a_mask, b, b_mask)
    b2 = b.clone()
    b2[:, 4:] = torch.randn(5, 2, 8, generator=g)  # masked frames may hold anything
    torch.testing.assert_close(fine_similarity(a, a_mask, b2, b_mask), base)
    torch.testing.assert_close(fine_similarity(a, a_mask, b[:, :4], b_mask[:, :4]), base)
    # large weight logits on one token = that token alone
    w = torch.full((3, 4), -1e4)
    w[:, 2] = 0
    one = fine_similarity(a, a_mask, b, b_mask, a_weight=w)
    assert not torch.allclose(one, base)


def test_coarse_similarity_and_its_relation_to_fine() -> None:
    g = torch.Generator().manual_seed(1)
    pooled, frames = torch.randn(3, 8, generator=g), torch.randn(4, 5, 8, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    expected = F.normalize(pooled, dim=-1) @ F.normalize(frames.mean(1), dim=-1).T
    torch.testing.assert_close(coarse_similarity(pooled, frames, mask), expected)
    # one token against one frame: fine == coarse
    one = torch.ones(3, 1, dtype=torch.bool)
    fine = fine_similarity(pooled[:, None], one, frames[:, :1], mask[:, :1])
    torch.testing.assert_close(fine, coarse_similarity(pooled, frames[:, :1]))
    # in general the two differ
    assert not torch.allclose(fine_similarity(pooled[:, None], one, frames, mask), coarse_similarity(pooled, frames))


def test_spec_augment_is_deterministic_under_a_generator() -> None:
    fbank = torch.randn(3, 2, 64, 128, generator=torch.Generator().manual_seed(0)) + 5.0  # no zeros before masking
    original = fbank.clone()
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=20)
    a = spec_augment(fbank, torch.Generator().manual_seed(7), cfg)
    b = spec_augment(fbank, torch.Generator().manual_seed(7), cfg)
    c = spec_augment(fbank, torch.Generator().manual_seed(8), cfg)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(fbank, original) and a.shape == fbank.shape
    masked = a == 0.0  # [3, 2, 64, 128]
    assert masked.any()
    for s in masked.reshape(6, 64, 128):  # every masked cell lies in a fully masked mel row or time column
        rows, cols = s.all(dim=1), s.all(dim=0)
        assert torch.equal(s, rows[:, None] | cols[None, :])
        assert rows.sum() <= 20 and cols.sum() <= 40
    assert not torch.equal(masked[0, 0], masked[0, 1])  # each slice has its own masks
    nothing = SpecAugmentConfig(freq_masks=0, time_masks=0)
    torch.testing.assert_close(spec_augment(fbank, torch.Generator(), nothing), fbank)


def _captions() -> torch.Tensor:
    tokens = torch.zeros(3, 40, dtype=torch.long)
    for i, n in enumerate([30, 3, 1]):  # words per caption
        tokens[i, 0], tokens[i, 1 : n + 1], tokens[i, n + 1] = SOT_TOKEN_ID, torch.arange(100, 100 + n), EOT_TOKEN_ID
    return tokens


def test_mask_caption_tokens_follows_valor() -> None:
    tokens = _captions()
    inputs, labels = mask_caption_tokens(tokens, 0.6, MASK_ID, torch.Generator().manual_seed(0))
    again = mask_caption_tokens(tokens, 0.6, MASK_ID, torch.Generator().manual_seed(0))
    assert torch.equal(inputs, again[0]) and torch.equal(labels, again[1])
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], tokens[chosen])
    assert not chosen[:, 0].any()  # SOT is never a target
    lengths = (tokens != 0).sum(1)  # SOT + words + EOT
    for i in range(3):
        assert not chosen[i, lengths[i] :].any()  # nor padding
        assert chosen[i].any()  # at least one per caption
    assert 0.4 < chosen[0].float().sum() / 31 < 0.8  # ~60 % of the long caption (words + EOT)
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    assert (inputs[chosen] == MASK_ID).float().mean() > 0.6  # 80 % [MASK], 10 % random, 10 % kept
    assert chosen[2].sum() >= 1


def test_next_token_caption_inputs() -> None:
    tokens = _captions()
    inputs, labels = caption_inputs(tokens, CaptionObjective(style=CaptionStyle.NEXT_TOKEN), MASK_ID)
    assert torch.equal(inputs, tokens[:, :-1])
    assert labels[1].tolist()[:5] == [100, 101, 102, EOT_TOKEN_ID, IGNORE_INDEX]


def test_objective_config_from_dict() -> None:
    cfg = ObjectiveConfig.from_dict(
        {
            "groups": ["tv", "tav"],
            "similarity": "coarse",
            "alpha": 2,
            "caption": {"style": "next_token", "groups": ["tav", "ta"]},
            "audio_self": {"spec_augment": {"time_width": 4}},
        }
    )
    assert cfg.groups == (ModalityGroup.T_V, ModalityGroup.T_AV) and cfg.similarity is Similarity.COARSE
    assert cfg.alpha == 2.0 and cfg.caption is not None and cfg.caption.style is CaptionStyle.NEXT_TOKEN
    assert cfg.audio_self is not None and cfg.audio_self.spec_augment.time_width == 4
    assert ObjectiveConfig.from_dict({"caption": None}).caption is None
    defaults = ObjectiveConfig()
    assert defaults.alpha == 1.5 and defaults.similarity is Similarity.FINE and len(defaults.groups) == 3
    with pytest.raises(ValueError, match=r"caption: unknown key.*mask_probability"):
        ObjectiveConfig.from_dict({"caption": {"mask_probability": 0.5}})
    with pytest.raises(ValueError, match=r"groups\[1\]: 'va' is not one of"):
        ObjectiveConfig.from_dict({"groups": ["tv", "va"]})
    with pytest.raises(ValueError, match=r"caption\.mask_prob"):
        ObjectiveConfig.from_dict({"caption": {"mask_prob": 0.0}})

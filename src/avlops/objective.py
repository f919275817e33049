"""The training objective's config, typed: which losses run, on which modality groups, how they are weighted.

Frozen dataclasses built strictly from plain data (``objective:`` in a training config) by
:func:`~avlops.dataclass_config.config_from_dict`; the loss functions that read them are in :mod:`avlops.losses`.
Standard library only, so the training config section validates its objective when ``params.yaml`` is read,
without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from avlops.dataclass_config import config_from_dict
from avlops.modality import ModalityGroup

__all__ = [
    "AudioSelfObjective",
    "CaptionObjective",
    "CaptionStyle",
    "ObjectiveConfig",
    "Similarity",
    "SpecAugmentConfig",
]


class CaptionStyle(Enum):
    """How the caption decoder is trained, which fixes how it decodes.

    ``MASKED`` (VALOR MGC): inputs have tokens replaced by ``[MASK]`` and each masked position predicts its own token;
    decoding feeds ``[SOT] t1 … t_k [MASK]`` and reads the last position. ``NEXT_TOKEN``: plain causal LM; decoding
    feeds ``[SOT] t1 … t_k`` and reads the last position.
    """

    MASKED = "masked"
    NEXT_TOKEN = "next_token"


class Similarity(Enum):
    FINE = "fine"  # VALOR: token-wise max, weighted mean (paper Table 10 default)
    COARSE = "coarse"  # CLIP-style pooled features (text EOT · masked mean of frames / slices)


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Frequency and time masks applied to each fbank slice independently (masked values set to ``value``)."""

    freq_masks: int = 2
    freq_width: int = 10  # each mask covers 0..freq_width mel bins
    time_masks: int = 2
    time_width: int = 10  # each mask covers 0..time_width fbank frames
    value: float = 0.0  # the normalised fbank's mean

    def __post_init__(self) -> None:
        if min(self.freq_masks, self.freq_width, self.time_masks, self.time_width) < 0:
            raise ValueError("spec_augment: mask counts and widths must be >= 0")


@dataclass(frozen=True)
class CaptionObjective:
    style: CaptionStyle = CaptionStyle.MASKED
    mask_prob: float = 0.6  # VALOR's causal masked LM
    groups: tuple[ModalityGroup, ...] = (ModalityGroup.T_AV,)  # memories to caption from; L_MGC = their mean
    weight: float = 1.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError("caption.mask_prob: must be in (0, 1]")
        if not self.groups:
            raise ValueError("caption.groups: at least one group")


@dataclass(frozen=True)
class AudioSelfObjective:
    """CLIP4VLA intra-modal term: InfoNCE between audio and its SpecAugment-masked copy."""

    weight: float = 1.0
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which losses, how they are computed and weighted: total = alpha·L_MGA + caption.weight·L_MGC (+ audio)."""

    groups: tuple[ModalityGroup, ...] = (ModalityGroup.T_V, ModalityGroup.T_A, ModalityGroup.T_AV)
    similarity: Similarity = Similarity.FINE
    weighted_tokens: bool = True  # fine similarity: learned per-token weights (False: plain masked mean)
    alpha: float = 1.5
    max_logit_scale: float = 100.0
    caption: CaptionObjective | None = field(default_factory=CaptionObjective)
    audio_self: AudioSelfObjective | None = None

    def __post_init__(self) -> None:
        if self.max_logit_scale <= 0:
            raise ValueError("max_logit_scale: must be positive")
        if not self.groups and self.caption is None and self.audio_self is None:
            raise ValueError("groups: no objective left (no groups, no caption, no audio_self)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectiveConfig:
        """Build from parsed YAML; enums by value (``groups: [tv, ta, tav]``); unknown keys raise ``ValueError``."""
        return config_from_dict(cls, data)

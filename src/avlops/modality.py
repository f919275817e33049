"""The modality groups, defined once: what text is aligned with, captioned from or retrieved among.

Two spellings of the same three groups live in files that must keep reading back, so both are defined here, side by
side, each mapping to the other:

* :class:`Modality` — ``v`` (video frames), ``a`` (audio), ``av`` (both): metric names (``retrieval/t2av/R@1``) and
  the ``evaluate`` config;
* :class:`ModalityGroup` — ``tv``, ``ta``, ``tav`` (the text side included, as VALOR names its tasks): the training
  objective's config, recorded with every checkpoint and registered version.

Standard library only: the model-free modules (metric names, the gate, configs) import it.
"""

from __future__ import annotations

from enum import Enum, StrEnum

__all__ = ["Modality", "ModalityGroup"]


class Modality(StrEnum):
    """What the text is matched with or captioned from, as metric names spell it."""

    VIDEO = "v"
    AUDIO = "a"
    AUDIOVISUAL = "av"

    @property
    def group(self) -> ModalityGroup:
        """The same group as the training objective spells it."""
        return ModalityGroup("t" + self.value)


class ModalityGroup(Enum):
    """What the text is aligned with (MGA) or what the caption decoder reads (MGC), as the objective spells it."""

    T_V = "tv"
    T_A = "ta"
    T_AV = "tav"

    @property
    def modality(self) -> Modality:
        """The same group as metric names spell it."""
        return Modality(self.value.removeprefix("t"))

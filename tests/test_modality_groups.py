"""The two spellings of the modality groups map one to one."""

from __future__ import annotations

from avlops.modality import Modality, ModalityGroup


def test_each_group_maps_to_the_same_group_in_the_other_spelling() -> None:
    assert [m.group for m in Modality] == [ModalityGroup.T_V, ModalityGroup.T_A, ModalityGroup.T_AV]
    assert all(g.modality.group is g for g in ModalityGroup)
    assert ModalityGroup.T_AV.modality is Modality.AUDIOVISUAL

"""VALOR's segment sampling (``data/data.py::split``) and the per-clip random generator.

A sequence of ``n_items`` (video frames, audio slices) is padded with its last item up to ``n_samples``, split into
``n_samples`` contiguous groups of near-equal size, and one item is taken per group: a random one in training, the
middle one (``(len + 1) // 2 - 1``) in evaluation. Random picks come from uniform draws made once per clip, so the
same draws give the same picks whether the item count is known before decoding or only after.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["clip_rng", "draws", "sampled_mask", "segment_groups", "segment_indices"]


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    """Generator seeded from ``(seed, clip_id)`` only: the same clip gets the same draws in any worker or order."""
    digest = hashlib.sha256(clip_id.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *words]))


def draws(n_samples: int, train: bool, rng: np.random.Generator | None) -> np.ndarray | None:
    """Uniform draws in [0, 1) for training-mode picks; None (middle picks) in evaluation mode."""
    if not train:
        return None
    if rng is None:
        raise ValueError("training-mode sampling needs a random generator")
    return rng.random(n_samples)


def segment_groups(n_items: int, n_samples: int) -> list[list[int]]:
    """VALOR ``split(range(n_items), n_samples)``: pad with the last index, then near-equal contiguous groups."""
    if n_items < 1 or n_samples < 1:
        raise ValueError(f"need at least one item and one sample, got {n_items} items and {n_samples} samples")
    items = list(range(n_items)) + [n_items - 1] * max(0, n_samples - n_items)
    k, m = divmod(len(items), n_samples)
    return [items[i * k + min(i, m) : (i + 1) * k + min(i + 1, m)] for i in range(n_samples)]


def segment_indices(n_items: int, n_samples: int, u: np.ndarray | None) -> list[int]:
    """One index per group: ``group[floor(u_i * len)]`` for training draws ``u``, the middle item when ``u`` is None."""
    groups = segment_groups(n_items, n_samples)
    if u is None:
        return [g[(len(g) + 1) // 2 - 1] for g in groups]
    if len(u) != n_samples:
        raise ValueError(f"expected {n_samples} draws, got {len(u)}")
    return [g[min(int(x * len(g)), len(g) - 1)] for g, x in zip(groups, u, strict=True)]


def sampled_mask(n_items: int, n_samples: int) -> list[bool]:
    """True for samples that are real items, False for those that only repeat the last item to reach ``n_samples``."""
    return [i < n_items for i in range(n_samples)]

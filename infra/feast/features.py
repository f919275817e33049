"""Feature definitions of this Feast repository: the ones the avlops library defines (avlops.features.store).

Feast registers every entity and feature view it finds at module level of the repository's Python files.
"""

from avlops.features.store import clip, clip_metadata, clip_stats

__all__ = ["clip", "clip_metadata", "clip_stats"]

"""The model registry: blessed checkpoints exported, checked for parity and published as versions of a Triton model
repository, with a model card per version and aliases (``champion``, ``challenger``)."""

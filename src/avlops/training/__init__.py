"""Training: ``avlops train`` and :func:`avlops.training.loop.train`.

Modules: ``params`` (the config section, light), ``data`` (shard dataset and resumable global-batch sampler),
``optim`` (AdamW groups, warmup + decay), ``checkpoint`` (atomic, resumable checkpoints), ``distributed`` (torchrun,
process group, all-gather with gradients), ``metrics`` (JSON lines + Prometheus) and ``loop`` (the run). Nothing is
imported here, so ``avlops.training.params`` stays cheap to import for the command line and ``params.yaml``.
"""

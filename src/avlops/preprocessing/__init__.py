"""Preprocessing: decoded media and captions → model tensors, one clip at a time or a whole manifest into shards.

Modules: ``params`` (the config section), ``sampling`` (VALOR segment sampling, per-clip generators), ``video``,
``audio``, ``text`` (per-modality transforms that also take in-memory arrays, for serving), ``shards`` (the on-disk
format), ``clip`` (one clip: ``preprocess_clip`` for a manifest record, ``preprocess_arrays`` for a serving request)
and ``run`` (a whole manifest: ``preprocess_manifest``, the sharded, resumable, parallel run). Nothing is imported
here, so ``avlops.preprocessing.params`` stays cheap to import for the CLI.
"""

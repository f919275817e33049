"""Evaluation: the papers' retrieval and captioning benchmarks, ``avlops evaluate`` and the blessing gate.

Modules: ``names`` (every metric name, defined once), ``params`` (the ``evaluate`` config section and its ``bless``
gate, light), ``retrieval`` (ranks and R@K/MedR/MeanR in slices, dual softmax), ``captioning`` (pycocoevalcap
scores, CLIP BPE decoding), ``results`` (``metrics.json``), ``blessing`` (the gate and ``blessing.json``),
``checkpoint`` (a training checkpoint back into a model), ``dataset`` (a preprocessed split with its reference
captions, checked against the model), ``scoring`` (features and the model's own similarity), ``run`` (every task
the data supports), ``report`` (plots, HTML and Markdown). Nothing is imported here, so the light modules stay light.
"""

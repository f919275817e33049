"""Kubeflow Pipelines of avlops: wiring only (the steps are ``components/``, the logic is ``avlops``).

- ``pretrain``: a DVC dataset reference to a blessed, registered, published and served model;
- ``evaluate``: a registered version on a dataset, to a report and a verdict, no training;
- ``catalogue_refresh``: a registered version encodes a dataset's clips and publishes them to Feast.

Each pipeline is built by a factory from the ``params.yaml`` sections (its parameters' defaults) and the cluster
options (image, GPU, PVC, secrets); :mod:`pipelines.compile` writes them as YAML for the Kubeflow UI,
:mod:`pipelines.local` runs them on ``kfp.local``.
"""

from __future__ import annotations

__all__ = ["NAMES"]

NAMES = ("pretrain", "evaluate", "catalogue_refresh")

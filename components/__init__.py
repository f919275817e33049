"""Kubeflow Pipelines components of avlops, one module per stage.

Each component's signature is its artifact contract (``Input``/``Output`` of ``Dataset``, ``Model``, ``Metrics``,
``HTML``, ``Markdown`` and typed parameters); its body calls one function of :mod:`avlops.flow.steps` and attaches the
result to its outputs. Components are lightweight Python components on the project's image (which has avlops
installed), so ``kfp.local`` runs them in this environment and a cluster runs them in that image.
"""

from functools import partial

from kfp import dsl

__all__ = ["BASE_IMAGE", "component"]

# The component image built from infra/docker/component.Dockerfile; `avlops pipeline compile --image` replaces it.
BASE_IMAGE = "ghcr.io/avlops/avlops:0.1.0"

component = partial(dsl.component, base_image=BASE_IMAGE, install_kfp_package=False)

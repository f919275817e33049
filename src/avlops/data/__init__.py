"""Datasets: the clip contract, manifests, importers, the synthetic corpus and DVC versioning."""

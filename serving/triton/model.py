"""Triton python-backend entry point written by ``avlops register`` into every python-backend model version: the
installed avlops package picks this model's handler by the model's name from the version's ``serving.json`` contract
(``avlops.serving.backend.load_handler``; the ``avlops.handler`` config parameter only records it). Nothing else
belongs here."""

from avlops.serving.backend import TritonPythonModel

__all__ = ["TritonPythonModel"]

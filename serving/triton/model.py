"""Triton python-backend entry point written by ``avlops register``: the handler named by this model's
``avlops.handler`` parameter runs from the installed avlops package. Nothing else belongs here."""

from avlops.serving.backend import TritonPythonModel

__all__ = ["TritonPythonModel"]

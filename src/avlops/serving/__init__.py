"""Serving with NVIDIA Triton Inference Server: the tensor contract, the handlers that Triton's python backend runs,
the model repository rendered from the contract, the local server launcher and the typed client.

Nothing here is imported by the model, loss or preprocessing code; ``tritonclient`` is imported only by
:mod:`avlops.serving.client` and :mod:`avlops.serving.server`, ``triton_python_backend_utils`` only inside
:mod:`avlops.serving.backend` (it exists only in a Triton python-backend process).
"""

"""Serving assets of avlops: the Triton model repository templates and launcher assets. Data, not logic: the serving
library is ``avlops.serving`` (handlers, tensor contract, config rendering, the launcher), which reads these files
with ``importlib.resources``.

- ``triton/model.py``: the python-backend ``model.py`` every registered python-backend model version holds; it
  imports the handler runner from the installed avlops package.
"""

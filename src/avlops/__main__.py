"""``python -m avlops``: the same as the ``avlops`` command."""

from avlops.cli import entry

entry()

"""Importers: turn a public dataset's annotations into a checked manifest of :class:`ClipRecord` in its root.

One module per source format (``valor``, ``captions_csv``, ``folder``); each returns an :class:`ImportResult`, and
:func:`save_import` checks it against the media and writes ``manifest.jsonl`` and ``quarantine.jsonl``.
"""

from avlops.data.importers.annotations import SourceError, find_annotation
from avlops.data.importers.captions_csv import AUDIOCAPS, CLOTHO, CsvFormat, import_captions_csv
from avlops.data.importers.folder import import_folder
from avlops.data.importers.result import QUARANTINE_NAME, ImportResult, clip_id_from, manifest_path, save_import
from avlops.data.importers.valor import import_valor

__all__ = [
    "AUDIOCAPS",
    "CLOTHO",
    "QUARANTINE_NAME",
    "CsvFormat",
    "ImportResult",
    "SourceError",
    "clip_id_from",
    "find_annotation",
    "import_captions_csv",
    "import_folder",
    "import_valor",
    "manifest_path",
    "save_import",
]

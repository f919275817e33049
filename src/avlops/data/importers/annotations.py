"""Reading annotation files so that every entry knows its line and no undecodable byte goes unnoticed.

Text is decoded as UTF-8 with ``surrogateescape``: a byte that is not UTF-8 becomes a lone surrogate instead of an
error, so one bad caption costs one entry (reported with its line), not the whole file. JSON arrays and objects are
walked element by element, so each entry comes with the line it starts on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "SourceError",
    "find_annotation",
    "iter_json_array",
    "iter_json_object",
    "iter_text_lines",
    "read_text",
    "undecodable",
]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_SURROGATE = re.compile("[\ud800-\udfff]")


class SourceError(ValueError):
    """An annotation file that cannot be read at all (not JSON, wrong top-level type, unknown CSV header)."""


def find_annotation(path: Path, root: Path) -> Path:
    """``path`` as given when it exists, else relative to the dataset ``root``."""
    if path.is_file():
        return path
    if not path.is_absolute() and (root / path).is_file():
        return root / path
    raise FileNotFoundError(f"{path}: annotation file not found (looked in the current folder and in {root})")


def read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 become lone surrogates (see :func:`undecodable`). A BOM is dropped."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def undecodable(value: Any) -> str | None:
    """Describe the first byte that was not UTF-8 in ``value`` (a string, or lists/dicts of them), or None."""
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        if m is None:
            return None
        if "\udc80" <= m.group() <= "\udcff":  # surrogateescape maps byte b to U+DC00 + b
            return f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02x})"
        return "not valid UTF-8 (a lone surrogate escape)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        bad = undecodable(k) or undecodable(v)
        if bad:
            return bad
    return None


def iter_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for every line of a text file (``\\n`` or ``\\r\\n`` endings)."""
    for n, line in enumerate(read_text(path).split("\n"), start=1):
        yield n, line.removesuffix("\r")


class _Lines:
    """Line numbers of increasing offsets in one text, counted incrementally (linear in the file size)."""

    def __init__(self, text: str) -> None:
        self.text, self._pos, self._line = text, 0, 1

    def at(self, pos: int) -> int:
        self._line += self.text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line


def _skip(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m else pos


def _expect(path: Path, text: str, pos: int, chars: str, what: str) -> str:
    if pos < len(text) and text[pos] in chars:
        return text[pos]
    got = repr(text[pos]) if pos < len(text) else "the end of the file"
    line = text.count("\n", 0, pos) + 1
    raise SourceError(f"{path}:{line}: not valid JSON for {what}: expected {' or '.join(chars)}, got {got}")


def _decode(path: Path, text: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}:{err.lineno}: not valid JSON: {err.msg} at column {err.colno}") from None


def _end(path: Path, text: str, pos: int, what: str) -> None:
    pos = _skip(text, pos)
    if pos != len(text):
        line = text.count("\n", 0, pos) + 1
        raise SourceError(f"{path}:{line}: not valid JSON for {what}: extra data after the end of the top-level value")


def iter_json_array(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """``(line, element)`` for each element of a file holding one JSON array; ``what`` names it in errors."""
    text = read_text(path)
    lines = _Lines(text)
    pos = _skip(text, 0)
    _expect(path, text, pos, "[", what)
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        _end(path, text, pos + 1, what)
        return
    while True:
        value, end = _decode(path, text, pos)
        yield lines.at(pos), value
        pos = _skip(text, end)
        closing = _expect(path, text, pos, ",]", what)
        pos = _skip(text, pos + 1)
        if closing == "]":
            _end(path, text, pos, what)
            return


def iter_json_object(path: Path, what: str) -> Iterator[tuple[int, str, Any]]:
    """``(line, key, value)`` for each member of a file holding one JSON object, duplicate keys included."""
    text = read_text(path)
    lines = _Lines(text)
    pos = _skip(text, 0)
    _expect(path, text, pos, "{", what)
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        _end(path, text, pos + 1, what)
        return
    while True:
        _expect(path, text, pos, '"', what)
        line = lines.at(pos)
        key, pos = _decode(path, text, pos)  # a JSON string, since it starts with '"'
        pos = _skip(text, pos)
        _expect(path, text, pos, ":", what)
        value, end = _decode(path, text, _skip(text, pos + 1))
        yield line, key, value
        pos = _skip(text, end)
        closing = _expect(path, text, pos, ",}", what)
        pos = _skip(text, pos + 1)
        if closing == "}":
            _end(path, text, pos, what)
            return

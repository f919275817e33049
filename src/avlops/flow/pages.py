"""Reports as single self-contained HTML pages, for the HTML artifacts Kubeflow's UI shows inline.

The UI renders one file: local images (``<img src="plots/x.png">``) are inlined as data URIs and several pages (one
per validation suite) are stacked into one document.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["self_contained_html"]

_IMG = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")', re.IGNORECASE)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)


def _inline(page: str, base: Path) -> str:
    def sub(m: re.Match[str]) -> str:
        src = html.unescape(m.group(2))
        path = base / src
        if src.startswith(("data:", "http:", "https:")) or not path.is_file():
            return m.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{m.group(1)}data:{mime};base64,{data}{m.group(3)}"

    return _IMG.sub(sub, page)


def self_contained_html(pages: Sequence[Path], *, title: str) -> str:
    """The bodies of ``pages`` (in order) in one document, their local images inlined."""
    parts = []
    for p in pages:
        text = _inline(p.read_text(encoding="utf-8", errors="replace"), p.parent)
        body = _BODY.search(text)
        parts.append(f"<section><!-- {html.escape(p.name)} -->{body.group(1) if body else text}</section>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body>{'<hr>'.join(parts)}</body></html>\n"
    )

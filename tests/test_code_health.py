"""Units a person can hold in their head: no module in src/ over 600 lines, no function over 80, unless a
``# long: <reason>`` comment says why (on the function's ``def`` line, or near the top of the module)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
REASON = "# long:"


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_is_too_long() -> None:
    too_long = []
    for path in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(line.startswith(REASON) for line in lines[:40]):
            too_long.append(f"{path.relative_to(SRC)}: {len(lines)} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines without a '{REASON}' reason: {too_long}"


def test_no_function_is_too_long() -> None:
    too_long = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = (node.end_lineno or node.lineno) - start + 1
                if n > MAX_FUNCTION_LINES and REASON not in lines[node.lineno - 1]:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines without a '{REASON}' reason: {too_long}"

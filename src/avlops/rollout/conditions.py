"""Safe evaluation of Argo-Rollouts-style analysis conditions such as ``result[0] <= 0.05 && !isNaN(result[0])``.

Nothing is ``eval``'d: the text is tokenised, ``&&`` / ``||`` / ``!`` become ``and`` / ``or`` / ``not``, Python's
parser builds a tree, and every node is checked against a small grammar before a tiny interpreter walks it:
numbers, ``true``/``false``, the name ``result`` (a list of floats: one per series the query returned), indexing it
with a constant, comparisons, ``and``/``or``/``not``, ``+ - * /``, and the functions ``len``, ``isNaN``, ``isInf``,
``abs``, ``min``, ``max``, ``all``, ``any`` (the last two over ``result``). Anything else is refused when the spec is
loaded, naming the condition and the construct.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import tokenize
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ConditionError", "check_condition", "evaluate_condition"]


class ConditionError(ValueError):
    """A condition that cannot be parsed, uses a forbidden construct, or fails on this result (e.g. no series)."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda a, b: _divide(a, b),
}


def _divide(a: float, b: float) -> float:
    """IEEE division (PromQL's too): x/0 is ±Inf, 0/0 is NaN, never an exception."""
    if b != 0:
        return a / b
    return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "isNaN": lambda x: math.isnan(float(x)),
    "isInf": lambda x: math.isinf(float(x)),
    "abs": abs,
    "min": min,
    "max": max,
    "all": lambda xs: all(bool(x) for x in xs),
    "any": lambda xs: any(bool(x) for x in xs),
}
_NAMES = {"result"}
_CONSTANTS = {"true": True, "false": False, "NaN": math.nan, "Inf": math.inf}


def _translate(text: str) -> str:
    """Argo's expr operators -> Python's: ``&&`` and, ``||`` or, ``!`` not (``!=`` stays)."""
    out: list[str] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as err:
        raise ConditionError(f"cannot read {text!r}: {err}") from err
    for tok in tokens:
        if tok.type == tokenize.ERRORTOKEN and tok.string.strip() in {"!", "&", "|"}:
            out.append({"!": " not ", "&": "&", "|": "|"}[tok.string.strip()])
        elif tok.type == tokenize.OP and tok.string in {"&", "|"}:
            out.append(tok.string)
        elif tok.type in {tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT}:
            continue
        else:
            out.append(tok.string)
        out.append(" ")
    joined = "".join(out)
    # a tokenizer-independent pass for the two-character operators (tokenize splits "&&" into two "&")
    return joined.replace("& &", " and ").replace("| |", " or ").replace("&&", " and ").replace("||", " or ")


def _parse(text: str) -> ast.Expression:
    if not text.strip():
        raise ConditionError("empty condition")
    source = _translate(text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise ConditionError(f"cannot parse {text!r}: {err.msg}") from err
    for node in ast.walk(tree):
        _check_node(node, text)
    return tree


def _check_node(node: ast.AST, text: str) -> None:
    allowed = (
        ast.Expression,
        ast.BoolOp,
        ast.And,
        ast.Or,
        ast.UnaryOp,
        ast.Not,
        ast.USub,
        ast.UAdd,
        ast.Compare,
        ast.BinOp,
        ast.Constant,
        ast.Name,
        ast.Load,
        ast.Subscript,
        ast.Call,
        *_COMPARE,
        *_BINARY,
    )
    if not isinstance(node, allowed):
        raise ConditionError(f"{text!r}: {type(node).__name__} is not allowed in a condition")
    if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
        raise ConditionError(f"{text!r}: only numbers are allowed as literals, not {node.value!r}")
    if isinstance(node, ast.Name) and node.id not in _NAMES | set(_CONSTANTS) | set(_FUNCTIONS):
        raise ConditionError(f"{text!r}: unknown name {node.id!r} (use result, true, false, NaN, Inf)")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ConditionError(f"{text!r}: only the functions {sorted(_FUNCTIONS)} may be called")
        if node.keywords:
            raise ConditionError(f"{text!r}: keyword arguments are not allowed")
    if isinstance(node, ast.Subscript) and not (
        isinstance(node.value, ast.Name) and node.value.id == "result" and _is_int_literal(node.slice)
    ):
        raise ConditionError(f"{text!r}: only result[<integer>] may be indexed")


def _is_int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def check_condition(text: str) -> str:
    """Parse and check ``text``; returns it unchanged or raises :class:`ConditionError`."""
    _parse(text)
    return text


def evaluate_condition(text: str, result: Sequence[float]) -> bool:
    """The truth of ``text`` for ``result`` (the query's values). Raises :class:`ConditionError` when the condition
    cannot be evaluated on this result, e.g. ``result[0]`` of an empty result — the caller records an Error."""
    tree = _parse(text)
    values = [float(v) for v in result]
    try:
        value = _eval(tree.body, values)
    except (IndexError, TypeError, ValueError) as err:
        raise ConditionError(f"{text!r} on result {values}: {err}") from err
    return bool(value)


def _eval(node: ast.AST, result: list[float]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id == "result":
            return result
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, result) for v in node.values)
        return any(_eval(v, result) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, result)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, result), _eval(node.right, result))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, result)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        index = _eval(node.slice, result)
        return result[index]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(_eval(a, result) for a in node.args))
    raise ConditionError(f"unexpected {type(node).__name__}")  # _check_node makes this unreachable

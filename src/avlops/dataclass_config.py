"""Plain data (a parsed YAML or JSON mapping) into a frozen dataclass, strictly: :func:`config_from_dict`.

The model's and the objective's configs are dataclasses (the model file imports torch only); this is the one parser
that builds them from plain data. Standard library only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

__all__ = ["config_from_dict"]

C = TypeVar("C")


def config_from_dict(cls: type[C], data: Any, where: str = "") -> C:
    """Strictly build the frozen dataclass ``cls`` from plain data: nested dataclasses, enums (by value), tuples,
    ``X | None``, bool/int/float/str. Unknown keys and wrong types raise ``ValueError`` naming the dotted key."""
    name = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(fields)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, key)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value.value if isinstance(value, tp) else value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not one of {[m.value for m in tp]}") from None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"{key}: unsupported config type {tp!r}")
    if not ok:
        raise ValueError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value

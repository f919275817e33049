"""Feast without typeguard's import-time instrumentation. Import this module before ``feast``.

Feast decorates its definition classes (``FeatureView``, ``Entity``, ``FileSource``, ...) with typeguard's
``@typechecked``, which re-parses and recompiles every method of those classes when ``feast`` is imported: about
3 s of CPU of the 6.5 s that importing Feast costs on the 2-core machine, paid again by every process that uses the
store (a pipeline's ``features`` and ``publish`` tasks each pay it). typeguard documents one way to turn it off: under
``python -O`` ``@typechecked`` returns its target unchanged. This module does the same for Feast only — Feast is the
only installed package that uses typeguard — without changing how the rest of the process runs (``-O`` would also
drop every ``assert``). What is lost is typeguard's run-time check of the argument types passed to Feast's
constructors; avlops' calls into Feast are type-checked by mypy (strict) and exercised against the real store by the
tests.

Importing it after ``feast`` has been imported does nothing (those classes are already instrumented).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typeguard

__all__ = ["feast_instrumented"]


def _typechecked(target: Any = None, **_options: Any) -> Any:
    """``typeguard.typechecked`` as under ``python -O``: the target unchanged (also used as ``@typechecked()``)."""
    if target is None:
        return _unchanged
    return target


def _unchanged(target: Any) -> Any:
    return target


def feast_instrumented() -> bool:
    """Whether Feast's classes carry typeguard's checks (True when ``feast`` was imported before this module)."""
    feast = sys.modules.get("feast")
    if feast is None:
        return False
    init: Callable[..., Any] = feast.FeatureView.__init__
    return "TypeCheckMemo" in init.__code__.co_names


if "feast" not in sys.modules:
    typeguard.typechecked = _typechecked

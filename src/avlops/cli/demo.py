"""``avlops demo``: the embedded end-to-end flow on one machine."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    return None

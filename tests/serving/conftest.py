"""Fixtures of the serving tests: the tiny real deployment (``deployment``, ``register``) lives in the root conftest,
shared with the registry tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _serving_one_thread(one_thread: None) -> None:
    """One torch thread: the 2 cores are shared with the server's model processes."""

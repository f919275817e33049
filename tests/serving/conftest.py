"""Fixtures of the serving tests: one tiny real deployment per session (``serving_data``), registries per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from serving_data import Deployment, make_deployment

from avlops.registry.params import RegisterConfig
from avlops.registry.register import Registration, register_model


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """One torch thread: the 2 cores are shared with the server's model processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """Corpus, data, checkpoint, blessed verdict and catalogue (read-only: copy what a test changes)."""
    return make_deployment(tmp_path_factory.mktemp("deployment"))


@pytest.fixture
def register(deployment: Deployment, tmp_path: Path) -> Callable[..., Registration]:
    """``register(repository=tmp_path / "registry", **register_model kwargs)``: the deployment's checkpoint."""

    def run(repository: Path | None = None, config: dict[str, Any] | None = None, **kwargs: Any) -> Registration:
        cfg = RegisterConfig.model_validate({"repository": str(repository or tmp_path / "registry"), **(config or {})})
        kwargs.setdefault("data_dir", deployment.data)
        return register_model(
            kwargs.pop("checkpoint", deployment.checkpoint),
            kwargs.pop("eval_dir", deployment.eval_dir),
            kwargs.pop("catalogue", deployment.catalogue),
            cfg,
            **kwargs,
        )

    return run

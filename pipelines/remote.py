"""Submit a compiled pipeline to a Kubeflow Pipelines server with ``kfp.Client``: a named run in an experiment.

The token comes from the environment (``KFP_TOKEN``), never from the command line; without it ``kfp.Client`` uses
the in-cluster service-account token or the local kubeconfig's credentials as it always does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Submitted", "submit"]


@dataclass(frozen=True)
class Submitted:
    run_id: str
    run_name: str
    experiment: str
    url: str


def submit(
    package: Path, host: str, arguments: dict[str, Any], *, run_name: str, experiment: str, namespace: str | None = None
) -> Submitted:
    """Create a run of the compiled ``package`` on the KFP server at ``host``."""
    import kfp

    client = kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None, namespace=namespace)
    run = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace
    )
    return Submitted(run.run_id, run_name, experiment, f"{host.rstrip('/')}/#/runs/details/{run.run_id}")

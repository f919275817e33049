"""The ``deploy`` section of ``params.yaml``: what the pipeline's deploy hand-off does with the version it registered.

Light on purpose (pydantic only), like every section model.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from avlops.config import StrictModel

__all__ = ["DeployConfig", "DeployMode", "DeployTarget"]


class DeployMode(StrEnum):
    SERVE = "serve"  # a throw-away Triton server on the version answers a search and a caption, then stops
    ROLLOUT = "rollout"  # a canary rollout of the version (avlops rollout start)


class DeployTarget(StrEnum):
    LOCAL = "local"  # the running local platform (avlops rollout up)
    KUBERNETES = "kubernetes"  # the Argo Rollout update for a cluster, rendered (not applied)


class DeployConfig(StrictModel):
    """The pipeline's deploy step: serve and query the version (the demo's default), or roll it out."""

    mode: DeployMode = Field(DeployMode.SERVE, description="serve (serve + query once) or rollout (a canary)")
    target: DeployTarget = Field(
        DeployTarget.LOCAL,
        description="rollout: local (start it on the platform in workdir) or kubernetes (render the Argo Rollout "
        "update to apply; nothing is started)",
    )
    workdir: str = Field("artifacts/rollout", description="the local platform's folder (avlops rollout up --workdir)")
    spec: str = Field("configs/rollout/default.yaml", description="the rollout spec (Argo Rollouts field names)")
    probe: bool = Field(True, description="the golden-query probe sends the dataset's test captions to both tracks")

    @model_validator(mode="after")
    def _target_needs_rollout(self) -> DeployConfig:
        if self.target is DeployTarget.KUBERNETES and self.mode is not DeployMode.ROLLOUT:
            raise ValueError("target: kubernetes renders a rollout's update: it needs mode: rollout")
        return self

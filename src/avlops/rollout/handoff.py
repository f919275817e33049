"""The pipeline's deploy hand-off in ``rollout`` mode: the version it registered becomes a canary rollout.

Locally (``target: local``) the rollout starts on the running platform (``avlops rollout up``), as ``avlops rollout
start VERSION --detach --golden MANIFEST`` would: the rollout is recorded, its controller runs in the background
(it outlives the pipeline task) and the hand-off returns at once with the rollout's id and phase; ``avlops rollout
status`` follows it. On a cluster the same hand-off is the Argo Rollout's update to the new version: the kustomize
tree of ``avlops rollout render`` is written for it (both targets), and with ``target: kubernetes`` that is all
(nothing here can reach a cluster: ``kubectl apply -k`` of an overlay is the operator's, or a CD tool's).

A version the platform already serves as its stable is not rolled out again (a rerun of a pipeline that reused its
version); a retried hand-off whose rollout already runs reports that rollout. Everything else fails loudly, with what
to do: no platform up, a platform on another registry, another version's rollout under way, an unknown, unblessed or
previously failed version, a malformed spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avlops.config import ConfigError
from avlops.registry.store import CHAMPION, Registry
from avlops.rollout.controller import TERMINAL, Controller, RolloutError, rollable, run_detached
from avlops.rollout.params import DeployConfig, DeployTarget
from avlops.rollout.platform import PlatformError, load
from avlops.rollout.spec import RolloutSpec, load_rollout

__all__ = ["HandOff", "HandOffError", "hand_off"]

RENDERED = "Rendered"  # the kubernetes target's phase: the update is written, not applied
STABLE = "Stable"  # the version already serves as the stable: nothing to roll out


class HandOffError(RuntimeError):
    """The hand-off cannot start the rollout; the message says why and what to do."""


@dataclass(frozen=True)
class HandOff:
    rollout_id: str  # the local rollout's id ("" when none was started)
    phase: str  # Progressing (started), Paused (a retried hand-off's rollout), Rendered, Stable
    version: int
    stable_version: int
    target: str
    address: str = ""  # local: the platform's one client address
    follow: str = ""  # the command that shows the rollout
    overlays: list[str] = field(default_factory=list)  # the rendered kustomize folders
    golden: str = ""  # the manifest the quality probe reads

    def outputs(self) -> dict[str, Any]:
        return {
            "target": self.target, "version": self.version, "stable_version": self.stable_version,
            "rollout_id": self.rollout_id, "rollout_phase": self.phase, "follow": self.follow,
        }  # fmt: skip

    def note(self) -> str:
        """One line for the run summary."""
        if self.phase == STABLE:
            return f"v{self.version} already serves as the stable: nothing to roll out"
        if self.rollout_id:
            started = f"rollout {self.rollout_id} of v{self.version} over v{self.stable_version}"
            return f"{started}: {self.phase} ({self.follow})"
        return f"v{self.version} over v{self.stable_version}: Argo Rollout update {self.phase.lower()}, not applied"

    def markdown(self) -> str:
        """The step's page."""
        if self.phase == STABLE:
            lines = [f"# Version {self.version} already serves", "", "It is the stable version: nothing to roll out."]
        elif self.rollout_id:
            probe = f", the golden-query probe sending the test captions of `{self.golden}`" if self.golden else ""
            lines = [
                f"# Rollout of version {self.version}",
                "",
                f"Rollout `{self.rollout_id}`: version {self.version} as a canary over stable version "
                f"{self.stable_version}, behind Envoy at `{self.address}`{probe}: **{self.phase}**.",
                "",
                f"Follow it: `{self.follow}`; `avlops rollout promote` / `abort` act on it.",
            ]
        else:
            lines = [
                f"# Argo Rollout update to version {self.version}",
                "",
                f"Rendered, not applied: version {self.version} over stable version {self.stable_version}. "
                f"Apply: `{self.follow}`.",
            ]
        if self.overlays:
            lines += ["", "The cluster's update (kustomize): " + ", ".join(f"`{o}`" for o in self.overlays)]
        return "\n".join(lines) + "\n"


def hand_off(repository: Path, version: int, cfg: DeployConfig, *, golden: Path | None, manifests: Path) -> HandOff:
    """Roll ``version`` of ``repository`` out as ``cfg`` says; the cluster's update is rendered under ``manifests``.

    ``golden``: the manifest whose test captions the quality probe sends (None: no probe)."""
    repository = Path(repository).resolve()
    try:
        spec = load_rollout(Path(cfg.spec))
    except ConfigError as err:
        raise HandOffError(f"deploy.spec: nothing started: {err}") from err
    if cfg.target is DeployTarget.KUBERNETES:
        return _render_only(repository, version, spec, manifests)
    return _start_local(repository, version, cfg, spec, golden, manifests)


def _render(spec: RolloutSpec, version: int, stable: int, manifests: Path) -> list[str]:
    from avlops.monitoring.prometheus import rules_dir
    from avlops.rollout.kubernetes import render_tree

    return [str(p) for p in render_tree(manifests, spec, rules_dir(), version=version, stable_version=stable)]


def _render_only(repository: Path, version: int, spec: RolloutSpec, manifests: Path) -> HandOff:
    registry = Registry(repository)
    try:
        rollable(registry, version)
    except RolloutError as err:
        raise HandOffError(f"nothing rendered: {err}") from err
    stable = registry.aliases().get(CHAMPION)
    if stable is None:
        raise HandOffError(f"{repository}: no {CHAMPION} alias: there is no stable version to roll out over")
    if stable == version:
        return HandOff("", STABLE, version, stable, DeployTarget.KUBERNETES.value)
    overlays = _render(spec, version, stable, manifests)
    follow = f"kubectl apply -k {manifests}/overlays/gpu (or overlays/cpu, kserve); kubectl argo rollouts get rollout"
    return HandOff("", RENDERED, version, stable, DeployTarget.KUBERNETES.value, follow=follow, overlays=overlays)


def _start_local(
    repository: Path, version: int, cfg: DeployConfig, spec: RolloutSpec, golden: Path | None, manifests: Path
) -> HandOff:
    workdir = Path(cfg.workdir).resolve()
    try:
        platform = load(workdir)
    except PlatformError:
        raise HandOffError(
            f"deploy.mode rollout: no rollout platform is up in {workdir}: start one on the current champion with "
            f"`avlops rollout up --repository {repository} --workdir {workdir}` and run the pipeline again (or set "
            "deploy.mode=serve to serve and query the version instead)"
        ) from None
    if Path(platform.registry).resolve() != repository:
        raise HandOffError(
            f"the platform in {workdir} serves registry {platform.registry}, but the pipeline registered version "
            f"{version} in {repository}: bring the platform up on that registry (avlops rollout down, then up "
            "--repository) or point deploy.workdir at a platform that serves it"
        )
    controller = Controller(workdir)
    follow = f"avlops rollout status --workdir {workdir}"
    current = controller.state()
    if current is not None and current.phase not in TERMINAL and current.version == version:
        # a retried hand-off: its rollout already runs (a controller is started only if none is)
        if controller.controller_running() is None:
            run_detached(workdir, golden)
        return HandOff(
            current.id, current.phase.value, version, current.stable_version, DeployTarget.LOCAL.value,
            platform.address, follow, golden=str(golden or ""),
        )  # fmt: skip
    stable_slot = platform.slot_of("stable")
    if stable_slot is not None and platform.versions[stable_slot] == version:
        return HandOff("", STABLE, version, version, DeployTarget.LOCAL.value, platform.address, follow)
    try:
        state = controller.begin(version, spec, str(cfg.spec))
    except RolloutError as err:
        raise HandOffError(f"no rollout of version {version} started: {err}") from err
    overlays = _render(spec, version, state.stable_version, manifests)
    run_detached(workdir, golden)
    return HandOff(
        state.id, state.phase.value, version, state.stable_version, DeployTarget.LOCAL.value, platform.address,
        follow, overlays, str(golden or ""),
    )  # fmt: skip

"""The rollout controller: steps a canary through its rollout spec on the local platform and decides.

State lives in ``<workdir>/rollout/state.json``, rewritten atomically after every change (step, weights, every
measurement), so ``avlops rollout status`` reads it from any shell and a controller that was killed is resumed by
``avlops rollout resume`` exactly where it stopped: Envoy, the servers and Prometheus are separate processes and go
on serving meanwhile, so no request is lost. One controller runs at a time (``controller.lock``); a person talks to
it through request files (``promote``, ``abort``) it picks up on its next tick, or, when no controller runs, the
command acts itself.

What happens (Argo Rollouts' canary semantics):

- ``setWeight`` moves that share of traffic to the canary through Envoy's runtime API;
- ``pause`` waits its duration, or, without one, for ``avlops rollout promote``;
- ``analysis`` runs the named templates' metrics against Prometheus; **Failed** aborts, **Inconclusive** or **Error**
  pauses for a person (``promote`` goes on, ``abort`` stops), **Successful** goes on;
- after the last step the canary is promoted: full weight, the registry's ``champion`` alias moves to it, the old
  stable is drained (weight 0, then no request in flight at Envoy) and stopped;
- an abort sets the canary's weight to 0, drains and stops the canary server, and marks the version failed in the
  registry with the reasons.

Faults: a canary server that dies aborts the rollout (Envoy's health checks have already drained it); an Envoy that
died is restarted with the weights of the state; Prometheus unreachable makes measurements Errors (never a success).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from avlops.config import build
from avlops.monitoring.prometheus import PrometheusClient, PrometheusError
from avlops.registry.register import relabel_config
from avlops.registry.store import CHAMPION, Registry, RegistryError
from avlops.rollout.analysis import AnalysisRun, MeasurementError, Provider
from avlops.rollout.envoy import EnvoyError
from avlops.rollout.platform import Platform, load
from avlops.rollout.spec import Metric, Phase, RolloutSpec, render_query

__all__ = [
    "Controller",
    "RolloutError",
    "RolloutPhase",
    "RolloutState",
    "prometheus_provider",
    "rollable",
    "run_detached",
]

log = logging.getLogger(__name__)


class RolloutError(RuntimeError):
    """A rollout that cannot start or go on: unknown or unblessed version, one already running, no platform."""


class RolloutPhase(StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ABORTED = "Aborted"


TERMINAL = (RolloutPhase.PROMOTED, RolloutPhase.ABORTED)


class Event(BaseModel):
    at: float
    text: str


class RolloutState(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")

    id: str
    spec: dict[str, Any]  # the validated spec, as loaded (a later edit of the file does not change a running rollout)
    spec_file: str
    version: int
    stable_version: int
    canary_slot: str
    stable_slot: str
    phase: RolloutPhase = RolloutPhase.PROGRESSING
    step: int = -1  # -1: the canary server is not started yet
    step_started: float = 0.0
    weight: int = 0  # the canary's share of traffic now
    runs: list[AnalysisRun] = Field(default_factory=list)
    pause_reason: str | None = None
    reasons: list[str] = Field(default_factory=list)  # why it was aborted
    events: list[Event] = Field(default_factory=list)
    started: float
    finished: float | None = None

    def rollout_spec(self) -> RolloutSpec:
        return build(RolloutSpec, self.spec, self.spec_file)

    def current_runs(self) -> list[AnalysisRun]:
        return [r for r in self.runs if r.step == self.step]


def rollable(registry: Registry, ref: str | int) -> int:
    """The version ``ref`` names, when it may be rolled out: registered, blessed, and not failed in a rollout before."""
    try:
        version = registry.resolve(ref)
    except RegistryError as err:
        raise RolloutError(str(err)) from err
    if not registry.blessed(version):
        raise RolloutError(f"version {version} is not blessed by its evaluation: it cannot be rolled out")
    status = registry.status(version)
    if status.get("status") == "failed":
        raise RolloutError(f"version {version} failed a rollout before: {'; '.join(status.get('reasons', []))}")
    return version


def run_detached(workdir: Path, golden: Path | None = None, *, wait_s: float = 30.0) -> int:
    """Run the current rollout's controller in the background (``avlops rollout resume`` in its own session, so it
    outlives the caller: a shell, or a pipeline task); ``golden``: the probe's manifest. Returns its pid."""
    import sys

    from avlops.rollout.daemon import Daemon

    cmd = [sys.executable, "-m", "avlops", "rollout", "resume", "--workdir", str(workdir)]
    if golden is not None:
        cmd += ["--golden", str(golden)]
    daemon = Daemon(Path(workdir) / "rollout", "controller")
    deadline = time.monotonic() + wait_s
    while daemon.pid() is not None and time.monotonic() < deadline:  # the last rollout's controller is exiting
        time.sleep(0.1)
    return daemon.start(cmd, lambda: True)


def prometheus_provider(url: str) -> Provider:
    """Measure a metric with an instant query to ``url`` (or the metric's own ``address``)."""

    def measure(metric: Metric, args: dict[str, str]) -> list[float]:
        prom = metric.provider.prometheus
        if prom is not None:
            client = PrometheusClient(prom.address or url)
            try:
                return client.query(render_query(prom.query, args))
            except PrometheusError as err:
                raise MeasurementError(str(err)) from err
        compare = metric.provider.compare
        assert compare is not None
        from avlops.rollout.compare import compare_tracks

        try:
            return [compare_tracks(PrometheusClient(compare.address or url), compare, args)]
        except PrometheusError as err:
            raise MeasurementError(str(err)) from err

    return measure


class Controller:
    """The controller of the platform in ``workdir`` (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        *,
        provider: Provider | None = None,
        tick_s: float = 1.0,
        drain_timeout_s: float = 30.0,
        hooks: list[Callable[[Controller, RolloutState], None]] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.dir = self.workdir / "rollout"
        self.platform: Platform = load(self.workdir)
        self.provider = provider or prometheus_provider(self.platform.prometheus_url)
        self.tick_s = tick_s
        self.drain_timeout_s = drain_timeout_s
        self.hooks = hooks or []  # called every tick while the canary serves (the golden-query probe)

    # -- files --------------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    def state(self) -> RolloutState | None:
        if not self.state_path.is_file():
            return None
        return RolloutState.model_validate_json(self.state_path.read_text())

    def save(self, state: RolloutState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(state.model_dump_json(indent=1))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    def history(self) -> list[RolloutState]:
        folder = self.dir / "history"
        if not folder.is_dir():
            return []
        states = [RolloutState.model_validate_json(p.read_text()) for p in folder.glob("*.json")]
        return sorted(states, key=lambda s: s.started)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``controller.lock``; raises :class:`RolloutError` at once when another controller holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "controller.lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RolloutError(f"{self.dir}: a rollout controller is already running") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def controller_running(self) -> int | None:
        """The pid of the controller that runs now (recorded by :meth:`run` while it holds the lock), or None."""
        from avlops.rollout.daemon import process_start_time

        try:
            record = json.loads((self.dir / "controller.json").read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        return pid if process_start_time(pid) == record.get("start") else None

    def request(self, what: str) -> None:
        """Ask the running controller to ``promote``, ``promote-full`` or ``abort`` on its next tick."""
        if what not in ("promote", "promote-full", "abort"):
            raise RolloutError(f"unknown request {what!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"request-{what}").write_text(str(time.time()))

    def _take_request(self) -> str | None:
        for what in ("abort", "promote-full", "promote"):
            path = self.dir / f"request-{what}"
            if path.is_file():
                path.unlink()
                return what
        return None

    # -- starting -----------------------------------------------------------------------------------------------
    def begin(self, ref: str | int, spec: RolloutSpec, spec_file: str) -> RolloutState:
        """Check and record a new rollout of ``ref`` (a version or an alias); the canary starts on the first tick."""
        current = self.state()
        if current is not None and current.phase not in TERMINAL:
            raise RolloutError(
                f"rollout {current.id} of version {current.version} is {current.phase.value}: "
                "promote or abort it first (avlops rollout status)"
            )
        version = rollable(Registry(Path(self.platform.registry)), ref)
        stable_slot = self.platform.slot_of("stable")
        if stable_slot is None:
            raise RolloutError("the platform serves no stable version")
        stable_version = self.platform.versions[stable_slot]
        if version == stable_version:
            raise RolloutError(f"version {version} is already the stable version")
        now = time.time()
        state = RolloutState(
            id=time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:6],
            spec=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            spec_file=spec_file,
            version=version,
            stable_version=stable_version,
            canary_slot=self.platform.free_slot(),
            stable_slot=stable_slot,
            started=now,
        )
        self._event(state, f"rollout of version {version} over stable {stable_version} begins")
        self.save(state)
        return state

    # -- the loop -----------------------------------------------------------------------------------------------
    def run(self, *, stop_when: Callable[[RolloutState], bool] | None = None) -> RolloutState:
        """Drive the current rollout until it is promoted or aborted (or ``stop_when`` says so, e.g. Paused)."""
        with self.lock():
            from avlops.rollout.daemon import process_start_time

            me = {"pid": os.getpid(), "start": process_start_time(os.getpid())}
            running = self.dir / "controller.json"
            running.write_text(json.dumps(me))
            try:
                while True:
                    state = self.state()
                    if state is None:
                        raise RolloutError("no rollout to run (avlops rollout start VERSION)")
                    if state.phase in TERMINAL or (stop_when is not None and stop_when(state)):
                        return state
                    self.tick(state)
                    state = self.state()
                    assert state is not None
                    if state.phase not in TERMINAL:
                        time.sleep(self._sleep_for(state))
            finally:  # this process no longer drives the rollout (it may live on: a benchmark, a test)
                running.unlink(missing_ok=True)

    def _sleep_for(self, state: RolloutState) -> float:
        wake = [time.time() + self.tick_s]
        spec = state.rollout_spec()
        for run in state.current_runs():
            at = run.wake_at(spec.template(run.template))
            if at is not None:
                wake.append(at)
        return max(0.05, min(wake) - time.time())

    def tick(self, state: RolloutState) -> None:
        """One step of the state machine; saves the state when it changed."""
        self.platform = load(self.workdir)
        request = self._take_request()
        if request == "abort":
            self.abort(state, ["aborted by request"])
            return
        if state.step >= 0 and self.platform.server(state.canary_slot).pid() is None:
            self.abort(state, [f"the canary server (version {state.version}, slot {state.canary_slot}) exited"])
            return
        self._keep_envoy(state)
        if request is not None:
            if request == "promote-full":
                self._event(state, "promoted fully by request: remaining steps skipped")
                state.step = len(state.rollout_spec().steps)
            elif state.phase == RolloutPhase.PAUSED:
                self._event(state, f"resumed by request at step {state.step}")
                state.step += 1
            state.phase, state.pause_reason, state.step_started = RolloutPhase.PROGRESSING, None, time.time()
            self.save(state)
        if state.phase == RolloutPhase.PAUSED:
            return
        if state.step < 0:
            self._start_canary(state)
            return
        spec = state.rollout_spec()
        if state.step >= len(spec.steps):
            self.promote(state)
            return
        for hook in self.hooks:
            hook(self, state)
        step = spec.steps[state.step]
        if step.set_weight is not None:
            self._set_weight(state, step.set_weight)
            self._next(state)
        elif step.pause is not None:
            seconds = step.pause.seconds
            if seconds is None:
                self._pause(state, f"step {state.step}: pause until promoted")
            elif time.time() >= state.step_started + seconds:
                self._next(state)
        else:
            self._analyse(state, spec)

    def _next(self, state: RolloutState) -> None:
        state.step += 1
        state.step_started = time.time()
        self.save(state)

    def _pause(self, state: RolloutState, reason: str) -> None:
        state.phase, state.pause_reason = RolloutPhase.PAUSED, reason
        self._event(state, f"paused: {reason}")
        self.save(state)

    def _event(self, state: RolloutState, text: str) -> None:
        log.info("rollout %s: %s", state.id, text)
        state.events.append(Event(at=time.time(), text=text))

    def _start_canary(self, state: RolloutState) -> None:
        slot = state.canary_slot
        if self.platform.server(slot).pid() is None:
            self._event(state, f"starting the canary server: version {state.version} in slot {slot}")
            self.save(state)
            self.platform.start_server(slot, state.version, "canary")
        self._event(state, "canary ready")
        self._next(state)

    def _keep_envoy(self, state: RolloutState) -> None:
        envoy = self.platform.envoy()
        if envoy.running():
            return
        self._event(state, "Envoy was not running: restarted with the rollout's weights")
        envoy.start()
        envoy.set_weights(self._weights(state, state.weight))
        self.save(state)

    def _weights(self, state: RolloutState, canary: int) -> dict[str, int]:
        return {state.canary_slot: canary, state.stable_slot: 100 - canary}

    def _set_weight(self, state: RolloutState, weight: int) -> None:
        self.platform.envoy().set_weights(self._weights(state, weight))
        state.weight = weight
        self._event(state, f"canary weight {weight} %")
        self.save(state)

    def _runtime_args(self, state: RolloutState) -> dict[str, str]:
        return {
            "canary-cluster": state.canary_slot,
            "stable-cluster": state.stable_slot,
            "canary-version": str(state.version),
            "stable-version": str(state.stable_version),
        }

    def _analyse(self, state: RolloutState, spec: RolloutSpec) -> None:
        step = spec.steps[state.step].analysis
        assert step is not None
        runs = state.current_runs()
        if not runs:
            now = time.time()
            for ref in step.templates:
                template = spec.template(ref.template_name)
                args = spec.resolved_args(step, template, self._runtime_args(state))
                state.runs.append(AnalysisRun.begin(template, state.step, args, now))
            self._event(state, f"step {state.step}: analysis {[r.template_name for r in step.templates]} begins")
            self.save(state)
            runs = state.current_runs()
        changed = False
        for run in runs:
            if run.phase == Phase.RUNNING:
                changed |= run.step_once(spec.template(run.template), self.provider)
        if changed:
            self.save(state)
        phases = [r.phase for r in runs]
        if Phase.FAILED in phases:
            self.abort(state, _failure_reasons(runs))
        elif Phase.RUNNING in phases:
            return
        elif all(p == Phase.SUCCESSFUL for p in phases):
            self._event(state, f"step {state.step}: analysis Successful")
            self._next(state)
        else:
            worst = Phase.ERROR if Phase.ERROR in phases else Phase.INCONCLUSIVE
            self._pause(state, f"step {state.step}: analysis {worst.value}: " + "; ".join(_failure_reasons(runs)))

    # -- endings ------------------------------------------------------------------------------------------------
    def _drain(self, slot: str) -> None:
        """Wait until Envoy has no request in flight to ``slot`` (its weight is already 0), at most the timeout."""
        envoy = self.platform.envoy()
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline:
            try:
                if envoy.active_requests(slot) == 0:
                    return
            except (OSError, EnvoyError):
                return
            time.sleep(0.2)

    def promote(self, state: RolloutState) -> None:
        """Full weight to the canary, the champion alias to its version, the old stable drained and stopped."""
        self._set_weight(state, 100)
        registry = Registry(Path(self.platform.registry))
        with registry.lock():
            registry.set_alias(CHAMPION, state.version, relabel_config)
        registry.set_status(state.version, "promoted", [], rollout=state.id, at=time.time())
        self._event(state, f"champion alias moved to version {state.version}")
        self.platform.set_track(state.canary_slot, "stable")
        self._drain(state.stable_slot)
        self.platform.stop_server(state.stable_slot)
        self._event(state, f"old stable version {state.stable_version} drained and stopped")
        self._finish(state, RolloutPhase.PROMOTED)

    def abort(self, state: RolloutState, reasons: list[str]) -> None:
        """Canary weight 0, canary drained and stopped, the version marked failed with ``reasons``."""
        state.reasons = reasons
        self._event(state, "aborting: " + "; ".join(reasons))
        envoy = self.platform.envoy()
        with contextlib.suppress(EnvoyError, OSError):
            if not envoy.running():
                envoy.start()
            envoy.set_weights(self._weights(state, 0))
        state.weight = 0
        self.save(state)
        self._drain(state.canary_slot)
        if state.canary_slot in self.platform.versions or self.platform.server(state.canary_slot).pid() is not None:
            self.platform.stop_server(state.canary_slot)
        Registry(Path(self.platform.registry)).set_status(
            state.version, "failed", reasons, rollout=state.id, at=time.time()
        )
        self._event(state, f"version {state.version} marked failed in the registry")
        self._finish(state, RolloutPhase.ABORTED)

    def _finish(self, state: RolloutState, phase: RolloutPhase) -> None:
        state.phase, state.pause_reason, state.finished = phase, None, time.time()
        self._event(state, phase.value)
        self.save(state)
        history = self.dir / "history"
        history.mkdir(parents=True, exist_ok=True)
        (history / f"{state.id}.json").write_text(state.model_dump_json(indent=1))


def _failure_reasons(runs: list[AnalysisRun]) -> list[str]:
    reasons = []
    for run in runs:
        for metric in run.metrics:
            if metric.phase in (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE):
                last = metric.measurements[-1] if metric.measurements else None
                detail = f"value {last.value}: {last.message}" if last else "no measurement"
                reasons.append(f"{run.template}/{metric.name} {metric.phase.value} ({detail})")
    return reasons


def state_summary(state: RolloutState) -> dict[str, Any]:
    """The status a person reads: step, weights, every analysis run with its values."""
    spec = state.rollout_spec()
    ended = state.phase in TERMINAL

    def shown(phase: Phase) -> str:  # an analysis still running when the rollout ended was stopped with it
        return "Stopped" if ended and phase == Phase.RUNNING else phase.value

    return {
        "id": state.id,
        "phase": state.phase.value,
        "version": state.version,
        "stable_version": state.stable_version,
        "step": f"{max(state.step, 0)}/{len(spec.steps)}",
        "weights": {"canary": state.weight, "stable": 100 - state.weight},
        "slots": {"canary": state.canary_slot, "stable": state.stable_slot},
        "pause_reason": state.pause_reason,
        "reasons": state.reasons,
        "analysis": [
            {
                "step": r.step,
                "template": r.template,
                "phase": shown(r.phase),
                "metrics": {
                    m.name: {"phase": shown(m.phase), "values": [ms.value for ms in m.measurements]} for m in r.metrics
                },
            }
            for r in state.runs
        ],
        "events": [f"{time.strftime('%H:%M:%S', time.gmtime(e.at))} {e.text}" for e in state.events[-10:]],
    }


def dump(state: RolloutState) -> str:
    return json.dumps(state_summary(state), indent=1, default=str)

"""The local serving platform a rollout runs on: two Triton slots behind Envoy, a Prometheus and a Pushgateway.

Everything lives in one folder (``artifacts/rollout`` by default): ``platform.json`` (the registry, the ports of
every piece, and which version each slot serves), the pid files and logs of each process, Envoy's and Prometheus's
configuration and data. Ports are chosen once, at :func:`up`: each slot keeps its gRPC / HTTP / metrics ports for
its whole life, so Envoy's configuration never changes and a canary started later in a slot is found where Envoy
expects it. Every process binds 127.0.0.1 and runs detached; :func:`down` stops them all.

A slot's process is ``avlops serve --version V`` (the supervisor of :mod:`avlops.serving.supervisor`: Triton on the
registry's ``v<V>`` configurations, model control off, admin APIs closed), started detached and ready when its
supervisor's ``/v2/health/ready`` answers 200, i.e. once every ensemble answered a real request. Envoy health-checks
that same endpoint, so a slot whose model process died is drained, and the supervisor restarts it. Stopping a slot
sends SIGTERM to its supervisor, which drains (readiness false, in-flight requests finished) before Triton stops.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.request
from pathlib import Path

from pydantic import BaseModel

from avlops.monitoring.prometheus import (
    PrometheusServer,
    Pushgateway,
    TritonTarget,
    rules_dir,
    write_triton_targets,
)
from avlops.rollout.daemon import Daemon
from avlops.rollout.envoy import DEFAULT_MAX_REQUEST_BYTES, SLOTS, EnvoyProxy, Upstream
from avlops.serving.bundle import ServingBundle
from avlops.serving.contract import TEXT_PREPROCESS
from avlops.serving.params import request_limit
from avlops.serving.server import free_port, stop_leftovers

log = logging.getLogger(__name__)

__all__ = ["Platform", "PlatformError", "SlotPorts", "down", "load", "up"]


class PlatformError(RuntimeError):
    """The platform is not up, already up, or a piece of it could not start."""


class SlotPorts(BaseModel):
    grpc: int
    http: int
    metrics: int
    health: int = 0  # the supervisor's readiness endpoint (0: a platform from before supervision, Triton's HTTP)


class Platform(BaseModel):
    """``platform.json``: where everything is. ``tracks[slot]`` is ``stable`` / ``canary``; ``versions[slot]`` the
    registry version it serves (absent: the slot is empty)."""

    workdir: str
    registry: str
    envoy_port: int
    envoy_admin_port: int
    prometheus_port: int
    pushgateway_port: int
    slots: dict[str, SlotPorts]
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # Envoy refuses larger requests (the stable version's limit)
    versions: dict[str, int] = {}
    tracks: dict[str, str] = {}

    # -- handles ------------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.workdir)

    def envoy(self) -> EnvoyProxy:
        ups = {s: Upstream("127.0.0.1", p.grpc, p.http, p.health) for s, p in self.slots.items()}
        return EnvoyProxy(self.root, self.envoy_port, self.envoy_admin_port, ups, self.max_request_bytes)

    def prometheus(self) -> PrometheusServer:
        return PrometheusServer(self.root, self.prometheus_port)

    def pushgateway(self) -> Pushgateway:
        return Pushgateway(self.root, self.pushgateway_port)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def pushgateway_url(self) -> str:
        return f"http://127.0.0.1:{self.pushgateway_port}"

    @property
    def address(self) -> str:
        """The one address clients use, gRPC and HTTP, whatever the split."""
        return f"127.0.0.1:{self.envoy_port}"

    def server(self, slot: str) -> Daemon:
        return Daemon(self.root, f"triton-{slot}")

    def slot_of(self, track: str) -> str | None:
        return next((s for s, t in self.tracks.items() if t == track and s in self.versions), None)

    def free_slot(self) -> str:
        for slot in SLOTS:
            if slot not in self.versions:
                return slot
        raise PlatformError(f"both slots serve a version ({self.versions}): a rollout is already under way")

    def grpc(self, slot: str) -> str:
        return f"127.0.0.1:{self.slots[slot].grpc}"

    # -- changes ------------------------------------------------------------------------------------------------
    def save(self) -> None:
        path = self.root / "platform.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        os.replace(tmp, path)

    def write_targets(self) -> None:
        targets = [
            TritonTarget(f"127.0.0.1:{self.slots[s].metrics}", s, self.tracks[s], v) for s, v in self.versions.items()
        ]
        write_triton_targets(self.root, targets)

    def start_server(self, slot: str, version: int, track: str, timeout_s: float = 300.0) -> None:
        """Serve ``version`` in ``slot`` with a detached ``avlops serve`` and wait until its supervisor says ready
        (every ensemble answered); record it."""
        p = self.slots[slot]
        folder = self.root / "slots" / slot
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "avlops",
            "serve",
            "--repository",
            self.registry,
            "--version",
            str(version),
            "--grpc-port",
            str(p.grpc),
            "--http-port",
            str(p.http),
            "--metrics-port",
            str(p.metrics),
            "--health-port",
            str(p.health),
            "--log",
            str(folder / "tritonserver.log"),
        ]
        # ready when its supervisor (this daemon's own session, not another process on the port) says so
        self.server(slot).start(cmd, lambda: _ready(p.health or p.http), timeout_s=timeout_s, port=p.health or None)
        self.versions[slot] = version
        self.tracks[slot] = track
        self.save()
        self.write_targets()

    def stop_server(self, slot: str) -> None:
        halt_server(self.server(slot))
        self.versions.pop(slot, None)
        self.tracks.pop(slot, None)
        self.save()
        self.write_targets()

    def set_track(self, slot: str, track: str) -> None:
        self.tracks[slot] = track
        self.save()
        self.write_targets()


def halt_server(daemon: Daemon) -> None:
    """Stop a slot's ``avlops serve`` (its supervisor drains first), then whatever its Triton left running: a
    supervisor that was killed (SIGKILL, OOM) cannot stop the python-backend stubs of its server, and a stub that
    misses its parent's death would serve nobody and hold memory until the machine restarts."""
    owner = daemon.recorded_pid()
    daemon.stop(timeout_s=90)
    if owner is not None:
        killed = stop_leftovers(owner)
        if killed:
            log.warning(
                "%s: stopped %d process(es) its killed supervisor (pid %d) left running", daemon.name, killed, owner
            )


def _ready(http_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
        return bool(r.status == 200)


def load(workdir: Path) -> Platform:
    path = Path(workdir) / "platform.json"
    if not path.is_file():
        raise PlatformError(f"{workdir}: no platform is up (avlops rollout up starts one)")
    return Platform.model_validate_json(path.read_text())


def version_request_limit(registry: Path, version: int) -> int:
    """The largest legitimate request to ``version`` of ``registry`` (its recorded limits, :func:`request_limit`)."""
    folder = Path(registry) / "models" / TEXT_PREPROCESS / str(version)  # every python model holds serving.json
    try:
        return request_limit(ServingBundle.read(folder).limits_config())
    except (OSError, ValueError) as err:
        raise PlatformError(f"{folder}: cannot read the version's request limits ({err})") from err


def up(
    workdir: Path, registry: Path, version: int, *, envoy_port: int = 0, max_request_bytes: int | None = None
) -> Platform:
    """Start the Pushgateway, the stable server on ``version`` (slot blue), Envoy and Prometheus. Envoy refuses
    requests over ``max_request_bytes`` (default: the largest legitimate request to ``version``)."""
    workdir = Path(workdir).resolve()
    if (workdir / "platform.json").is_file():
        raise PlatformError(f"{workdir}: a platform is already up (avlops rollout down stops it)")
    if max_request_bytes is not None and max_request_bytes < 1:
        raise PlatformError(f"max_request_bytes must be positive, got {max_request_bytes}")
    limit = max_request_bytes or version_request_limit(registry, version)
    workdir.mkdir(parents=True, exist_ok=True)
    platform = Platform(
        workdir=str(workdir),
        registry=str(Path(registry).resolve()),
        envoy_port=envoy_port or free_port(),
        envoy_admin_port=free_port(),
        prometheus_port=free_port(),
        pushgateway_port=free_port(),
        slots={
            s: SlotPorts(grpc=free_port(), http=free_port(), metrics=free_port(), health=free_port()) for s in SLOTS
        },
        max_request_bytes=limit,
    )
    platform.save()
    try:
        platform.pushgateway().start()
        platform.start_server(SLOTS[0], version, "stable")
        envoy = platform.envoy()
        envoy.start()
        envoy.set_weights({SLOTS[0]: 100, SLOTS[1]: 0})
        platform.prometheus().start(
            envoy_admin=f"127.0.0.1:{platform.envoy_admin_port}",
            pushgateway=f"127.0.0.1:{platform.pushgateway_port}",
            rules=rules_dir(),
        )
    except BaseException:
        down(workdir)
        raise
    return platform


def down(workdir: Path) -> None:
    """Stop every process of the platform in ``workdir`` and forget it (data and logs stay)."""
    workdir = Path(workdir)
    path = workdir / "platform.json"
    if not path.is_file():
        return
    platform = load(workdir)
    platform.prometheus().stop()
    platform.envoy().stop()
    for slot in SLOTS:
        halt_server(platform.server(slot))
    platform.pushgateway().stop()
    path.replace(workdir / "platform.down.json")

"""The serving supervisor: runs a :class:`TritonServer`, proves every few seconds that it really answers, heals it,
and stops it without losing requests. ``avlops serve`` is this, and each rollout slot runs ``avlops serve``.

**Why**: in Triton 2.51 a python-backend model process (stub) that dies is never restarted, and the server, model
and ensemble readiness all stay true while every request to that model fails with INTERNAL "Stub process ... is not
healthy" (platform-facts). So readiness here is the supervisor's own:

- **Inference probe**: every ``probe_interval_s`` one real, tiny request to each public ensemble (``search``,
  ``embed_text``, ``embed_clip``, ``embed_clip_arrays``, ``caption``) straight to the server, which between them
  reach every model process. A failed probe turns readiness false at once (the health endpoint answers 503, so a
  proxy's active health check drains the server; Kubernetes' readiness probe reads the same endpoint).
- **Heal**: after ``heal_after`` failed probes in a row (a probe that timed out counts a third: an overloaded server
  is drained at once, restarted only if it stays silent three times as long), or when Triton itself exited, the
  server is restarted on the
  same ports: SIGTERM, SIGKILL after ``restart_grace_s``, its shared memory removed, started again, probed; ready again
  only when the probes pass. Restarting the model alone would need Triton's model-repository API, which stays closed
  (:mod:`avlops.serving.server`). After ``max_restarts`` restarts that never served, the supervisor gives up: live
  turns false and ``run`` returns 1.
- **Stop** (``stop`` event, SIGTERM / Ctrl-C in ``avlops serve``): readiness false first, then ``drain_s`` for the
  proxy's health checks to take the server out of rotation, then until Triton has no request pending (at most
  ``grace_s``), then SIGTERM to Triton with its own exit timeout ``grace_s``; its shared memory is removed whatever
  happened.

The health endpoint (``host``:``health_port``): ``GET /v2/health/ready`` 200 while serving with passing probes, else
503; ``GET /v2/health/live`` 200 unless the supervisor gave up; ``GET /status`` a JSON of the state, restarts and the
last probe error. **Exit code** of :meth:`Supervisor.run`: 0 only when the stop was clean (Triton exited 0 and the
last probe passed); 1 when Triton exited non-zero, a model was failing when the stop came, or healing gave up.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import urllib.request
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from avlops.serving.server import ServerError, TritonServer

__all__ = ["Probe", "ProbeFailure", "Supervisor", "SupervisorSettings", "Watcher", "probe_media", "serve_health"]

_STUB = re.compile(r"Stub process '([^']+)' is not healthy")


class ProbeFailure(RuntimeError):
    """A probe request failed; ``model`` names the dead model process when Triton said which; ``timeout``: it
    answered nothing within the probe's deadline (a hung model, or only an overloaded server)."""

    def __init__(self, message: str, model: str | None = None, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.model = model
        self.timeout = timeout

    @property
    def weight(self) -> float:
        """How much this failure counts towards a restart: a timeout a third of an error, so an overloaded server
        is drained at once but restarted (which would only add load) only after three times as long."""
        return 1 / 3 if self.timeout else 1.0


def probe_media(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A tiny valid wav (a 440 Hz tone): what the media probes send."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        t = np.arange(int(seconds * rate)) / rate
        w.writeframes((3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes())
    return buf.getvalue()


class Probe:
    """One tiny request to each public ensemble of the server at ``grpc`` (no retries: a failure is the news)."""

    def __init__(self, grpc: str, timeout_s: float = 10.0) -> None:
        self.grpc, self.timeout_s = grpc, timeout_s
        self._media = probe_media()
        self._frames = np.stack([np.full((32, 32, 3), 60 * i, np.uint8) for i in range(2)])
        self._wave = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)

    def __call__(self) -> None:
        from avlops.serving.client import ServingClient, ServingError

        with ServingClient(self.grpc, retries=0, timeout_s=self.timeout_s) as client:
            checks: list[tuple[str, Callable[[], Any]]] = [
                ("search", lambda: client.search("probe", 1)),
                ("embed_text", lambda: client.embed_text(["probe"])),
                ("embed_clip_arrays", lambda: client.embed_clip_arrays(self._frames, self._wave, 16000, "nonverbal")),
                ("embed_clip", lambda: client.embed_clip(self._media, "nonverbal")),
                ("caption", lambda: client.caption(self._media, "nonverbal")),
            ]
            for name, call in checks:
                try:
                    call()
                except ServingError as err:
                    stub = _STUB.search(str(err))
                    dead = re.sub(r"_\d+_\d+$", "", stub.group(1)) if stub else None
                    timeout = err.status == "DEADLINE_EXCEEDED"
                    raise ProbeFailure(f"{name}: {err}", dead, timeout=timeout) from err


def serve_health(
    host: str,
    port: int,
    *,
    ready: Callable[[], bool],
    live: Callable[[], bool],
    snapshot: Callable[[], dict[str, Any]],
) -> ThreadingHTTPServer:
    """The health endpoint on ``host``:``port`` (0: a free one), served from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v2/health/ready":
                self._answer(200 if ready() else 503, b"")
            elif self.path == "/v2/health/live":
                self._answer(200 if live() else 503, b"")
            elif self.path == "/status":
                self._answer(200, json.dumps(snapshot()).encode(), "application/json")
            else:
                self._answer(404, b"")

        def _answer(self, code: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # health checks every second would flood the log

    http = ThreadingHTTPServer((host, port), Handler)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, name="health", daemon=True).start()
    return http


@dataclass(frozen=True)
class SupervisorSettings:
    host: str = "127.0.0.1"
    health_port: int = 0  # 0: a free port
    probe_interval_s: float = 2.0
    probe_timeout_s: float = 10.0
    heal_after: int = 2  # failed probes in a row before a restart
    max_restarts: int = 3  # restarts in a row that never served before giving up
    restart_grace_s: float = 10.0
    drain_s: float = 3.0
    grace_s: float = 30.0


@dataclass
class _State:
    state: str = "starting"
    restarts: int = 0
    heals: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None
    failures: float = 0.0  # failed probes in a row, timeouts weighing a third (ProbeFailure.weight)


class Supervisor:
    """See the module docstring. ``say`` receives one line per event (``print`` by default)."""

    def __init__(
        self,
        server: TritonServer,
        settings: SupervisorSettings | None = None,
        *,
        stop: threading.Event | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.server = server
        self.settings = settings or SupervisorSettings()
        self.stop_event = stop or threading.Event()
        self.say = say or (lambda line: print(line, flush=True))
        self.status = _State()
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self._started: bool | None = None
        self.health_port = self.settings.health_port

    # -- health endpoint ----------------------------------------------------------------------------------------
    def _set(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self.status.state = state
            if error is not None:
                self.status.last_error = error

    @property
    def ready(self) -> bool:
        return self.status.state == "serving"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            s = self.status
            return {
                "state": s.state,
                "ready": s.state == "serving",
                "restarts": s.restarts,
                "heals": list(s.heals),
                "last_error": s.last_error,
            }

    def _serve_health(self) -> None:
        self._http = serve_health(
            self.settings.host,
            self.settings.health_port,
            ready=lambda: self.ready,
            live=lambda: self.status.state != "failed",
            snapshot=self.snapshot,
        )
        self.health_port = int(self._http.server_address[1])

    @property
    def health_url(self) -> str:
        return f"http://{self.settings.host}:{self.health_port}/v2/health/ready"

    # -- the loop -----------------------------------------------------------------------------------------------
    def _probe(self) -> ProbeFailure | None:
        try:
            Probe(self.server.endpoints.grpc, self.settings.probe_timeout_s)()
        except ProbeFailure as failure:
            return failure
        except Exception as err:  # connection errors and the like: the server is not serving either way
            return ProbeFailure(f"probe: {err}")
        self.server.protect_shm()
        return None

    def _start_and_probe(self) -> bool:
        """Start the server and probe it until it answers (True) or the stop event is set (False)."""
        self.server.start(should_stop=self.stop_event.is_set)
        while not self.stop_event.is_set():
            failure = self._probe()
            if failure is None:
                return True
            self._set(self.status.state, str(failure))
            if self.server.process is None or self.server.process.poll() is not None:
                raise ServerError(f"tritonserver exited while being probed: {failure}")
            self.stop_event.wait(self.settings.probe_interval_s)
        return False

    def start(self) -> bool:
        """Open the health endpoint, start the server and wait for its first passing probe. False: stopped first."""
        self._serve_health()
        self._started = self._start_and_probe()
        if self._started:
            self._set("serving")
        return self._started

    def _heal(self, reason: str) -> bool:
        """Restart the server until it serves again (True), the stop event comes or the restarts run out (False)."""
        t0 = time.monotonic()
        for attempt in range(1, self.settings.max_restarts + 1):
            if self.stop_event.is_set():
                return False
            self._set("healing")
            with self._lock:
                self.status.restarts += 1
            self.say(f"healing: restarting the server ({reason}; attempt {attempt}/{self.settings.max_restarts})")
            self.server.stop(timeout_s=self.settings.restart_grace_s)
            try:
                if not self._start_and_probe():
                    return False
            except ServerError as err:
                self._set("healing", str(err))
                self.say(f"healing: the restarted server did not serve: {str(err).splitlines()[0]}")
                continue
            took = time.monotonic() - t0
            with self._lock:
                self.status.heals.append({"reason": reason, "seconds": round(took, 2), "attempts": attempt})
                self.status.failures = 0
            self._set("serving")
            self.say(f"healed in {took:.1f} s: every probe passes, ready again")
            return True
        self._set("failed", f"gave up after {self.settings.max_restarts} restart(s): {reason}")
        self.say(f"avlops serve: giving up: {self.settings.max_restarts} restart(s) never served ({reason})")
        return False

    def run(self) -> int:
        """Supervise until the stop event is set, then drain and stop; returns the exit code (module docstring)."""
        try:
            if self._started is None:
                self.start()
            if not self._started:
                return self._stop(failing=False)
            while not self.stop_event.wait(self.settings.probe_interval_s):
                process = self.server.process
                if process is None or process.poll() is not None:
                    code = None if process is None else process.returncode
                    self._set("failing", f"tritonserver exited with {code}")
                    self.say(f"tritonserver exited with {code}: not ready")
                    if not self._heal(f"tritonserver exited with {code}"):
                        break
                    continue
                failure = self._probe()
                if failure is None:
                    if self.status.state != "serving":
                        self.say("probes pass again: ready")
                    with self._lock:
                        self.status.failures = 0
                    self._set("serving")
                    continue
                with self._lock:
                    self.status.failures += failure.weight
                    failures = self.status.failures
                self._set("failing", str(failure))
                who = f" (model process of {failure.model} died)" if failure.model else ""
                self.say(f"probe failed{who}: not ready: {str(failure).splitlines()[0]}")
                if failures >= self.settings.heal_after - 1e-9 and not self._heal(
                    f"{failure.model or 'a model'} failing: {str(failure).splitlines()[0][:200]}"
                ):
                    break
            failing = self.status.state != "serving"
            return self._stop(failing=failing)
        finally:
            self.server.stop(timeout_s=self.settings.restart_grace_s)
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()

    # -- stopping -----------------------------------------------------------------------------------------------
    def _pending(self) -> int | None:
        """Requests Triton holds now (queued or executing), from its metrics; None when it cannot say."""
        try:
            with urllib.request.urlopen(self.server.endpoints.metrics, timeout=2) as r:
                text = r.read().decode()
        except (OSError, ServerError):
            return None
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("nv_inference_pending_request_count{")
        ]
        return int(sum(values)) if values else None

    def _stop(self, *, failing: bool) -> int:
        gave_up = self.status.state == "failed"
        process = self.server.process
        if process is None or process.poll() is not None:
            code = None if process is None else process.returncode
            self.server.stop()
            self._set("stopped" if not gave_up else "failed")
            return 1 if (gave_up or code not in (None, 0) or failing) else 0
        self._set("draining")
        s = self.settings
        self.say(f"draining: readiness false; {s.drain_s:g} s for the proxy to stop routing, then in-flight requests")
        time.sleep(s.drain_s)
        deadline = time.monotonic() + s.grace_s
        while (pending := self._pending()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pending:
            self.say(f"{pending} request(s) still pending after {s.grace_s:g} s: stopping anyway")
        code = self.server.stop(timeout_s=s.grace_s + 15)
        self._set("stopped")
        self.say(f"stopped (tritonserver exit code {code})")
        if failing:
            self.say(f"avlops serve: a model was failing when the stop came: {self.status.last_error}")
        return 0 if code == 0 and not failing and not gave_up else 1


class Watcher:
    """Probe-only supervision of a Triton server someone else runs (a sidecar next to a Triton container in a
    Kubernetes pod): the same inference probe every ``probe_interval_s`` against ``grpc``; ``/v2/health/ready`` is
    200 while the last probe passed; ``/v2/health/live`` turns 503 after ``heal_after`` failed probes in a row, so
    the orchestrator's liveness probe restarts the server (the heal), and back to 200 once a probe passes."""

    def __init__(
        self,
        grpc: str,
        settings: SupervisorSettings | None = None,
        *,
        stop: threading.Event | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.grpc = grpc
        self.settings = settings or SupervisorSettings()
        self.stop_event = stop or threading.Event()
        self.say = say or (lambda line: print(line, flush=True))
        self.passed = False
        self.failures = 0.0
        self.last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"ready": self.passed, "failures": self.failures, "last_error": self.last_error}

    def run(self) -> int:
        s = self.settings
        http = serve_health(
            s.host,
            s.health_port,
            ready=lambda: self.passed,
            live=lambda: self.failures < s.heal_after - 1e-9,
            snapshot=self.snapshot,
        )
        self.say(f"probing {self.grpc} every {s.probe_interval_s:g} s; health on port {http.server_address[1]}")
        try:
            while True:
                try:
                    Probe(self.grpc, s.probe_timeout_s)()
                except Exception as err:  # ProbeFailure, or the server not there (starting, restarting)
                    weight = err.weight if isinstance(err, ProbeFailure) else 1.0
                    self.passed, self.failures, self.last_error = False, self.failures + weight, str(err)
                    self.say(f"probe failed ({self.failures:.2g} in a row): {str(err).splitlines()[0][:300]}")
                else:
                    if not self.passed:
                        self.say("probes pass: ready")
                    self.passed, self.failures = True, 0.0
                if self.stop_event.wait(s.probe_interval_s):
                    return 0
        finally:
            http.shutdown()
            http.server_close()

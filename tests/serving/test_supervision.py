"""``avlops serve`` as an operator meets it under faults, on a real Triton server and a registered tiny model: a
python-backend model process killed under load is detected by the inference probe (readiness false) and healed by a
restart; SIGTERM under load drains with no non-retryable error and leaves no shared memory; the exit code tells the
truth; nothing secret is on any command line and the admin APIs (shared-memory registration included) are closed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
from avlops.serving.client import ServerUnavailableError, ServingClient, ServingError
from avlops.serving.server import CLOSED_HEADER, SHM_DIR, free_port
from serving_data import Deployment

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@dataclass
class Serve:
    """A running ``avlops serve`` and everything it printed."""

    process: subprocess.Popen[str]
    grpc: str
    http: str
    health: str
    log: Path
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def ready(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.health}/v2/health/ready", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def status(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.health}/status", timeout=5) as r:
            return dict(json.loads(r.read()))

    def triton_pid(self) -> int:
        """The tritonserver this ``avlops serve`` runs now (its child)."""
        return next(
            p for p, cmd in _processes() if cmd.startswith(f"{_triton_bin()}\0") and _ppid(p) == self.process.pid
        )

    def stub_pid(self, model: str) -> int:
        group = os.getpgid(self.triton_pid())
        return next(
            p
            for p, cmd in _processes()
            if "triton_python_backend_stub" in cmd and f"/{model}/" in cmd and _pgid(p) == group
        )


def _triton_bin() -> str:
    from avlops.serving.server import triton_home

    return str(triton_home() / "bin" / "tritonserver")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _processes() -> list[tuple[int, str]]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out.append((int(proc.name), (proc / "cmdline").read_bytes().decode(errors="replace")))
            except OSError:
                continue
    return out


def _serve(registry: Path, folder: Path, *extra: str) -> Serve:
    ports = [free_port() for _ in range(4)]
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "tritonserver.log"
    cmd = [
        sys.executable,
        "-m",
        "avlops",
        "serve",
        "--repository",
        str(registry),
        "--grpc-port",
        str(ports[0]),
        "--http-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        "--health-port",
        str(ports[3]),
        "--probe-interval",
        "1",
        "--drain-seconds",
        "2",
        "--log",
        str(log),
        *extra,
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    serve = Serve(process, f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", f"http://127.0.0.1:{ports[3]}", log)
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            serve.output.append(line)
            if line.startswith("serving version"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(400)
    if process.poll() is not None or not any(x.startswith("serving version") for x in serve.output):
        _stop(serve)
        raise AssertionError("avlops serve did not become ready:\n" + serve.text())
    return serve


def _stop(serve: Serve) -> None:
    if serve.process.poll() is None:
        serve.process.send_signal(signal.SIGTERM)
        try:
            serve.process.wait(120)
        except subprocess.TimeoutExpired:
            serve.process.kill()


@pytest.fixture(scope="module")
def registry(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("supervised") / "registry"
    cfg = RegisterConfig.model_validate({"repository": str(repository), "batching": {"max_batch_size": 8}})
    register_model(deployment.checkpoint, deployment.eval_dir, deployment.catalogue, cfg, data_dir=deployment.data)
    return repository


@pytest.fixture(scope="module")
def served(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    serve = _serve(registry, tmp_path_factory.mktemp("serve"))
    try:
        yield serve
    finally:
        _stop(serve)


class Load:
    """Searches (and text embeddings) in ``threads`` loops with the project's client (which retries UNAVAILABLE);
    every outcome is recorded with its time: a success when it ended, a failure with when it was sent and when it
    ended (with retries a request spans seconds, so "during the fault" means it overlapped it)."""

    def __init__(self, address: str, threads: int = 2, retries: int = 3) -> None:
        self.address, self.retries = address, retries
        self.ok: list[float] = []
        self.failed: list[tuple[float, float, ServingError]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, i: int) -> None:
        with ServingClient(self.address, retries=self.retries, timeout_s=30, backoff_s=0.2) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    if i % 2:
                        client.embed_text(["a red circle moves left"])
                    else:
                        client.search("a red circle moves left", 3)
                    self.ok.append(time.monotonic())
                except ServingError as err:
                    self.failed.append((sent, time.monotonic(), err))

    def wait_ok(self, n: int) -> None:
        target = len(self.ok) + n
        while len(self.ok) < target:
            time.sleep(0.05)


class Watch:
    """The supervisor's readiness, polled, every change recorded with its time."""

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.changes: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                code = self.serve.ready()
            except OSError:
                code = 0  # the endpoint is gone (stopped)
            if not self.changes or self.changes[-1][1] != code:
                self.changes.append((time.monotonic(), code))
            time.sleep(0.05)


def test_nothing_secret_on_a_command_line_and_the_admin_apis_are_closed(served: Serve) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    triton = served.triton_pid()
    cmdline = Path(f"/proc/{triton}/cmdline").read_bytes().decode().split("\0")
    restricted = [a for a in cmdline if a.startswith(("--grpc-restricted-protocol=", "--http-restricted-api="))]
    # the only "key" is a header no client can send: a name with spaces, a value that is a line feed
    assert restricted and all(a.endswith(f":{CLOSED_HEADER}=\n") for a in restricted)
    group = os.getpgid(triton)  # Triton and its model processes; and the supervisor
    ours = [cmd for pid, cmd in _processes() if _pgid(pid) == group or pid == served.process.pid]
    assert len(ours) > 5
    everything = "\n".join(ours) + served.log.read_text(errors="replace") + served.text()
    assert "admin-key" not in everything and "AVLOPS_TRITON_ADMIN_KEY" not in everything
    assert "AVLOPS_TRITON_ADMIN_KEY" not in Path(f"/proc/{triton}/environ").read_bytes().decode(errors="replace")

    # shared-memory registration, the repository and logging APIs: refused over both protocols
    request = urllib.request.Request(
        f"http://{served.http}/v2/systemsharedmemory/region/x/register",
        data=json.dumps({"key": "/anything", "offset": 0, "byte_size": 64}).encode(),
        method="POST",
    )
    for req in (request, urllib.request.Request(f"http://{served.http}/v2/repository/index", data=b"{}")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 403 and b"restricted" in err.value.read()
    client = grpcclient.InferenceServerClient(served.grpc)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.register_system_shared_memory("x", "/anything", 64)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index()
    client.close()

    # the python backend's IPC regions carry this server's prefix and are private to its user
    prefix = next(a for a in cmdline if "shm-region-prefix-name=" in a).rsplit("=", 1)[1]
    regions = list(SHM_DIR.glob(f"{prefix}*"))
    assert regions
    while any(p.stat().st_mode & 0o077 for p in SHM_DIR.glob(f"{prefix}*")):
        time.sleep(0.1)  # the supervisor tightens them after each passing probe


def test_a_killed_model_process_is_detected_and_healed_under_load(served: Serve) -> None:
    with Watch(served) as watch, Load(served.grpc) as load:
        load.wait_ok(10)
        killed_at = time.monotonic()
        os.kill(served.stub_pid("text_encoder"), signal.SIGKILL)
        while not any(code == 503 for t, code in watch.changes if t > killed_at):
            time.sleep(0.05)
        while not served.status()["heals"]:
            time.sleep(0.2)
        healed_at = time.monotonic()
        load.wait_ok(20)
    status = served.status()
    assert status["ready"] is True and int(str(status["restarts"])) >= 1
    heal = status["heals"][0]  # type: ignore[index]
    assert "text_encoder" in heal["reason"]
    assert "model process of text_encoder died" in served.text()
    # readiness went false after the kill and came back; every failed request fell between the kill and the heal
    codes_after = [code for t, code in watch.changes if t > killed_at]
    assert 503 in codes_after and codes_after[-1] == 200
    # (until the load's first success after the heal: a client's connection to the restarted server may still be
    # reconnecting when the status reports the heal)
    served_again = min((t for t in load.ok if t > healed_at), default=float("inf"))
    late = [(sent - killed_at, ended - killed_at, err) for sent, ended, err in load.failed]
    assert all(sent <= served_again and ended >= killed_at for sent, ended, _ in load.failed), (
        late,
        healed_at - killed_at,
        served_again - killed_at,
    )
    assert all(err.status in ("INTERNAL", "UNAVAILABLE") for _, _, err in load.failed), load.failed
    print(
        f"\nheal: {heal['seconds']} s from the first failed probe to serving again; "
        f"{len(load.failed)} failed and {len(load.ok)} served requests; readiness {codes_after}"
    )


def test_sigterm_under_load_drains_exits_0_and_leaves_no_shared_memory(served: Serve) -> None:
    cmdline = Path(f"/proc/{served.triton_pid()}/cmdline").read_bytes().decode().split("\0")
    prefix = next(a for a in cmdline if "shm-region-prefix-name=" in a).rsplit("=", 1)[1]
    assert list(SHM_DIR.glob(f"{prefix}*"))
    with Watch(served) as watch, Load(served.grpc, threads=3) as load:
        load.wait_ok(10)
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(180)
    assert code == 0, served.text()
    text = served.text()
    assert "draining" in text and "stopped (tritonserver exit code 0)" in text
    # readiness turned false while requests were still being served (the drain), and nothing but UNAVAILABLE
    # (retryable: the server is going away) reached a client
    false_at = next(t for t, c in watch.changes if c != 200)
    assert any(t > false_at for t in load.ok)
    assert all(isinstance(err, ServerUnavailableError) for _, _, err in load.failed), [str(e) for *_, e in load.failed]
    assert not list(SHM_DIR.glob(f"{prefix}*"))
    assert not any(_ppid(p) == served.process.pid for p, _ in _processes())
    print(f"\nstop under load: {len(load.ok)} served, {len(load.failed)} UNAVAILABLE after retries, exit 0")


def test_the_exit_code_tells_the_truth_when_a_model_process_dies_and_healing_is_off(
    registry: Path, tmp_path: Path
) -> None:
    serve = _serve(registry, tmp_path / "serve", "--max-restarts", "0")
    try:
        pid = serve.stub_pid("catalogue_search")
        cmdline = Path(f"/proc/{serve.triton_pid()}/cmdline").read_bytes().decode().split("\0")
        prefix = next(a for a in cmdline if "shm-region-prefix-name=" in a).rsplit("=", 1)[1]
        os.kill(pid, signal.SIGKILL)
        code = serve.process.wait(300)
    finally:
        _stop(serve)
    assert code == 1, serve.text()
    assert re.search(r"giving up: 0 restart\(s\)", serve.text())
    assert not list(SHM_DIR.glob(f"{prefix}*"))

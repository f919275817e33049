"""Start and stop a local Triton Inference Server (the binary of the ``nvidia-pytriton`` wheel), no Docker needed.

The launch follows platform-facts: a backend folder holding the wheel's python backend plus the stub built for this
interpreter's Python version; ``LD_LIBRARY_PATH`` with this interpreter's libpython first (else the stub loads the
system's libpython, whose stdlib does not match) then the wheel's libraries; ``PATH`` starting with this
environment's ``bin`` so the stub imports the project's packages. Everything is computed at run time.

Security of what is started: every endpoint binds ``host`` (127.0.0.1 by default); the model-control API is off
(``--model-control-mode=none``, or ``poll`` which reloads changed files but offers no load/unload API); the
model-repository, shared-memory, trace and logging APIs of both protocols are **closed**: Triton 2.51 takes a
restricted API's key only on its command line (which any local user reads in ``/proc/PID/cmdline``), so instead of
a secret the restriction names a header no client can send (its name holds spaces and its value a line feed, which
neither HTTP nor gRPC metadata can carry). Nothing secret is ever on the command line or in a log, and nobody, the
supervisor included, can use those APIs; a broken model is healed by restarting the server
(:mod:`avlops.serving.supervisor`). The python backend's shared-memory regions carry a prefix of this server's own
(``shm_prefix``): :meth:`TritonServer.protect_shm` makes them private to the server's user (the backend creates
them 0644 whatever the umask) and :meth:`TritonServer.stop` removes any Triton left behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "CLOSED_HEADER",
    "RESTRICTED_APIS",
    "SHM_DIR",
    "Endpoints",
    "ServerError",
    "TritonServer",
    "free_port",
    "http_ready",
    "owner_tag",
    "server_processes",
    "stop_leftovers",
    "triton_home",
]

READY_POLL_S = 0.1  # how often start() asks a starting server whether it is ready
RESTRICTED_APIS = "model-repository,shared-memory,trace,logging"
# a header name with spaces and a value with a line feed: neither HTTP nor gRPC can send it, so the APIs stay closed
CLOSED_HEADER = "admin apis closed"
_CLOSED = f"{RESTRICTED_APIS}:{CLOSED_HEADER}=\n"
SHM_DIR = Path("/dev/shm")


class ServerError(RuntimeError):
    """The server could not be found, started or made ready; the message carries the end of its log."""


@dataclass(frozen=True)
class Endpoints:
    host: str
    grpc_port: int
    http_port: int
    metrics_port: int

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


def http_ready(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether Triton at ``host:port`` (HTTP) answers ``/v2/health/ready`` with 200, on a connection of its own."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:  # refused (not listening yet), reset, timed out
        return False
    finally:
        conn.close()


def triton_home() -> Path:
    """The ``tritonserver`` folder of the installed ``nvidia-pytriton`` wheel."""
    try:
        import pytriton
    except ImportError as err:
        raise ServerError("nvidia-pytriton is not installed: it provides the tritonserver binary") from err
    home = Path(pytriton.__file__).parent / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise ServerError(f"{home}: no bin/tritonserver in the nvidia-pytriton wheel")
    return home


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _backend_dir(home: Path, dest: Path) -> Path:
    """``dest/python/``: the wheel's python backend plus the stub for this interpreter's Python version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"no python-backend stub for Python {version} in {stub.parent.parent}")
    python = dest / "python"
    shutil.copytree(home / "backends" / "python", python)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return dest


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(sysconfig.get_config_var("LIBDIR")), str(home.parent.parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")  # each python model instance is a process of its own
    return env


class TritonServer:
    """A Triton server on ``model_repository`` (a folder of models), as a context manager::

        with TritonServer(repo / "models", config_name="champion") as server:
            client = ServingClient(server.endpoints.grpc)

    Ports 0 are replaced by free ones. ``start`` returns once the server and every model are ready (or raises
    :class:`ServerError` with the log's end); ``stop`` sends SIGTERM, then SIGKILL to the server's process group.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        config_name: str | None = None,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        startup_timeout_s: float = 180.0,
        poll_seconds: int | None = None,
        log_path: Path | None = None,
        exit_timeout_s: int = 30,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.config_name = config_name
        self.host = host
        self.ports = (grpc_port, http_port, metrics_port)
        self.startup_timeout_s = startup_timeout_s
        self.poll_seconds = poll_seconds
        self.log_path = log_path
        self.exit_timeout_s = exit_timeout_s
        # the python backend's regions of this server: /dev/shm/<prefix>*, private and removed at stop; the prefix
        # starts with this process's tag, so leftovers of a process that was killed can be found (stop_leftovers)
        self.shm_prefix = f"{owner_tag(os.getpid())}{secrets.token_hex(4)}_"
        self.process: subprocess.Popen[bytes] | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._endpoints: Endpoints | None = None

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise ServerError("the server is not started")
        return self._endpoints

    def command(self, endpoints: Endpoints, backends: Path) -> list[str]:
        e = endpoints
        cmd = [
            str(triton_home() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--grpc-address={e.host}",
            f"--grpc-port={e.grpc_port}",
            f"--http-address={e.host}",
            f"--http-port={e.http_port}",
            f"--metrics-address={e.host}",
            f"--metrics-port={e.metrics_port}",
            f"--grpc-restricted-protocol={_CLOSED}",
            f"--http-restricted-api={_CLOSED}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-info=true",
        ]
        if self.poll_seconds:
            cmd += ["--model-control-mode=poll", f"--repository-poll-secs={self.poll_seconds}"]
        else:
            cmd.append("--model-control-mode=none")
        if self.config_name:
            cmd.append(f"--model-config-name={self.config_name}")
        return cmd

    def launch(self, scratch: Path) -> tuple[list[str], dict[str, str]]:
        """The command and environment that start this server, its backend folder made afresh under ``scratch``: for
        a launcher that runs Triton detached and outlives this object (the rollout platform's slots). The ports must
        be given (not 0)."""
        if 0 in self.ports:
            raise ServerError("launch() needs fixed ports: the caller records where the server listens")
        home = triton_home()
        shutil.rmtree(scratch / "backends", ignore_errors=True)
        backends = _backend_dir(home, scratch / "backends")
        self._endpoints = Endpoints(self.host, *self.ports)
        return self.command(self._endpoints, backends), _environment(home)

    def start(self, should_stop: Callable[[], bool] | None = None) -> Endpoints:
        """Start the server and wait until it is ready; ``should_stop()`` true gives up early (ServerError)."""
        if self.process is not None:
            return self.endpoints
        if not self.model_repository.is_dir():
            raise ServerError(f"{self.model_repository}: no model repository")
        home = triton_home()
        self._scratch = tempfile.TemporaryDirectory(prefix=scratch_prefix(os.getpid()))
        scratch = Path(self._scratch.name)
        backends = _backend_dir(home, scratch / "backends")
        ports = [p or free_port(self.host) for p in self.ports]
        self.ports = (ports[0], ports[1], ports[2])  # a restart (the supervisor's heal) keeps the endpoints
        self._endpoints = Endpoints(self.host, *ports)
        log = self.log_path or scratch / "tritonserver.log"
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command(self._endpoints, backends),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(home),
                start_new_session=True,  # its own process group: stop() reaches the python-backend stubs too
                umask=0o077,  # files it creates are private to the server's user
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(should_stop)
        except BaseException:
            self.stop()
            raise
        return self._endpoints

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_bytes().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Return as soon as Triton answers ready: ``GET /v2/health/ready`` on a fresh connection every
        ``READY_POLL_S``. A long-lived client made before the server listens would sit in gRPC's reconnect back-off
        (which grows to minutes) and see readiness late. ``should_stop()`` true gives up (ServerError)."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited with {code} while starting:\n{self.log_tail()}")
            if http_ready(self.endpoints.host, self.endpoints.http_port):
                return
            if should_stop is not None and should_stop():
                raise ServerError("stopped while starting")
            if time.monotonic() > deadline:
                raise ServerError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(READY_POLL_S)

    def stop(self, timeout_s: float = 45.0) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``); returns its exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            code = process.poll()
            if code is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    code = process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:  # e.g. a crashed stub can leave Triton waiting
                    _signal_group(process.pid, signal.SIGKILL)
                    code = process.wait()
            _signal_group(process.pid, signal.SIGKILL)  # stubs left behind in the group, if any
            self.remove_shm()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        return code

    def shm_regions(self) -> list[Path]:
        """This server's python-backend shared-memory regions now in ``/dev/shm``."""
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def protect_shm(self) -> int:
        """Make this server's regions readable and writable by its own user only; returns how many were changed."""
        changed = 0
        for path in self.shm_regions():
            with contextlib.suppress(OSError):
                if path.stat().st_mode & 0o077:
                    path.chmod(0o600)
                    changed += 1
        return changed

    def remove_shm(self) -> int:
        """Remove the regions a stopped server left behind (a killed Triton or stub never unlinks them)."""
        removed = 0
        for path in self.shm_regions():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def owner_tag(pid: int) -> str:
    """What every python-backend region (``/dev/shm``), and so every stub's and Triton's command line, of a server
    started by process ``pid`` begins with."""
    return f"avlops_{pid}_"


def scratch_prefix(pid: int) -> str:
    """The name prefix of the scratch folders (backends, default log) of servers started by process ``pid``."""
    return f"avlops-triton-{pid}-"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def server_processes(owner_pid: int) -> list[int]:
    """The running Triton servers and python-backend stubs that :class:`TritonServer` objects of process
    ``owner_pid`` started (found by :func:`owner_tag` in their command lines)."""
    tag = owner_tag(owner_pid).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            # a stub's arguments name its region (<tag>...); Triton's name the prefix (shm-region-prefix-name=<tag>...)
            if any(a.startswith(tag) or b"shm-region-prefix-name=" + tag in a for a in args) and _alive(int(proc.name)):
                found.append(int(proc.name))
    return sorted(found)


def stop_leftovers(owner_pid: int, timeout_s: float = 30.0) -> int:
    """What a killed owner left: kill the :func:`server_processes` of the ended process ``owner_pid``, wait until
    they are gone, and remove its python-backend regions and server scratch folders; returns how many processes
    were killed. Nothing is done while ``owner_pid`` runs (a live owner stops its own servers). Raises
    :class:`ServerError` when one outlives ``timeout_s`` after SIGKILL (a process in uninterruptible sleep).

    :meth:`TritonServer.stop` kills its server's whole group; a killed owner cannot. Its Triton dies with it
    (``PR_SET_PDEATHSIG``), but a python-backend stub leaves only when its own health thread notices the parent's
    death, which a stuck (or stopped) stub never does."""
    if _alive(owner_pid):
        return 0
    pids = server_processes(owner_pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        raise ServerError(f"processes of the ended server owner {owner_pid} survive SIGKILL: {alive}")
    for region in SHM_DIR.glob(f"{owner_tag(owner_pid)}*"):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
    for folder in Path(tempfile.gettempdir()).glob(f"{scratch_prefix(owner_pid)}*"):
        shutil.rmtree(folder, ignore_errors=True)
    return len(pids)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it dies (Linux ``PR_SET_PDEATHSIG``), so a
    supervisor killed with SIGKILL leaves no orphaned Triton; start servers from a thread that lives as long."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)

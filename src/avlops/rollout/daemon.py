"""Long-running helper processes (Envoy, Prometheus, the Pushgateway, Triton slots) that outlive the command that
started them: each runs in its own session (``setsid``), and a ``<name>.pid`` file in the platform's folder records
its pid and start time, so another shell, or a controller resumed after a kill, finds it again and can stop it. The
start time guards against a recycled pid: a pid file whose process is gone or was replaced reads as "not running".

Ports are chosen when a platform comes up and bound when a process starts, maybe minutes later; meanwhile another
process may take one. A readiness check over HTTP cannot tell who answers, so a start that names its ``port`` is
ready only when the listening socket on that port belongs to the new process's session: another server that
answers there (say another platform's Pushgateway, which would mix its series into this one's) is never mistaken
for it, and the new process's own bind error ends the start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["Daemon", "DaemonError", "holds_port", "process_start_time"]


class DaemonError(RuntimeError):
    """A helper process could not be started or made ready; the message carries its log's end."""


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None when no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return fields[19]


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on TCP ``port`` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()  # sl, local_address, rem_address, st, ..., inode (10th)
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _session_sockets(session: int) -> set[str]:
    """The socket inodes open in the processes of ``session`` (a daemon and its children: wrappers, stubs)."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (proc / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[3]) != session:  # state, ppid, pgrp, session
                continue
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
    return inodes


def holds_port(session: int, port: int) -> bool:
    """Whether a process of ``session`` listens on ``port``."""
    listening = _listening_inodes(port)
    return bool(listening) and bool(listening & _session_sockets(session))


class Daemon:
    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = Path(workdir)
        self.name = name

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def recorded_pid(self) -> int | None:
        """The pid the pid file records, running or not (None without a pid file)."""
        try:
            return int(json.loads(self.pid_path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def pid(self) -> int | None:
        """The running process's pid, or None."""
        try:
            record = json.loads(self.pid_path.read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        return pid if process_start_time(pid) == record.get("start") else None

    def start(
        self,
        cmd: Sequence[str],
        ready: Callable[[], bool],
        *,
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> int:
        """Launch ``cmd`` detached and wait until ``ready()`` is true and, with ``port``, the process listens there
        (raises with the log's end if it exits or times out, after stopping it)."""
        if (running := self.pid()) is not None:
            raise DaemonError(f"{self.name} already runs (pid {running}, {self.pid_path})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        tmp = self.pid_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": process.pid, "start": process_start_time(process.pid), "cmd": list(cmd)}))
        os.replace(tmp, self.pid_path)
        deadline = time.monotonic() + timeout_s
        foreign = ""  # another process answered the readiness check on our port
        while True:
            if process.poll() is not None:
                raise DaemonError(
                    f"{self.name} exited with {process.returncode} while starting{foreign}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                if ready():
                    if port is None or holds_port(process.pid, port):
                        return process.pid
                    foreign = f" (port {port} is held by another process, which answered in its place)"
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"{self.name} not ready after {timeout_s:.0f} s{foreign}:\n{self.log_tail()}")
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the process's whole group; False when it is not running."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the group, wait up to ``timeout_s`` for the process to exit, then SIGKILL; forget the pid file."""
        pid = self.pid()
        if pid is not None:
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.pid() is not None:
                self.signal(signal.SIGKILL)
                while self.pid() is not None:
                    time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # anything left in its group (Triton's python-backend stubs)
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.is_file():
            return ""
        text = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return text[-4000:]  # one line can be huge (Envoy prints its whole configuration on a config error)

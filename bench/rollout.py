"""Benchmark rollouts on the real local platform: decisions, their speed, the requests they cost, and Envoy's overhead.

    uv run python bench/rollout.py [--out bench/results] [--spec configs/rollout/default.yaml]

A tiny model (``configs/model/tiny.yaml``, trained for a few seconds on a synthetic corpus, as in the serving tests)
is registered six times: healthy copies, and one whose weights were corrupted after its blessing (Gaussian noise of
the tensor's own scale on every weight; its catalogue rebuilt from the corrupted towers, so it serves consistently and
stays healthy and fast). The platform (``avlops rollout up``: Envoy, two Triton slots, Prometheus, Pushgateway) serves
the first; a closed-loop gRPC load of two client threads runs through Envoy for the whole benchmark, recording every
request. Then each scenario rolls a version out with the default rollout spec and the golden-query probe:

- ``healthy``: promoted;
- ``errors``: Envoy's fault filter fails 20 % of the canary's requests (gRPC INTERNAL) once it takes traffic;
- ``latency``: a canary registered with a batching misconfiguration (``max_queue_delay_us`` = 100 ms: every
  dynamically batched model waits for a fuller batch) — really slower in Triton, which Envoy's upstream latency
  histograms see (a delay injected by Envoy's own fault filter happens before the upstream request and is not in
  them: a first run of this benchmark with that injection promoted the canary);
- ``corrupted``: the corrupted version (only the quality probe can tell);
- ``killed``: the canary's Triton server is SIGKILLed during the analysis.

For each: the decision, the time from start to decision and from the fault to the decision, and the failed requests
in total, on the stable track (Envoy's per-cluster gRPC counters of the stable's slot) and on the canary track.
Last, Envoy's added latency: sequential searches straight to the stable Triton server and through Envoy, interleaved
in rounds, p50 / p99 of each and their ratio. Writes ``rollout.json`` and ``rollout.md``.

With ``--report DIR`` each scenario also leaves what an operator would look at, made by the CLI itself on the
scenario's platform: ``DIR/<scenario>/`` holds ``avlops monitor report``'s PNG plots (after 20 s more of load, so the
plots show the decision's aftermath) and ``status.txt``, the output of ``avlops rollout status`` once it decided. The
README's rollout walkthrough embeds the ``healthy`` and ``errors`` ones (``--only healthy errors --report
docs/rollout``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine, machine_table
from safetensors.torch import load_file, save_file

from avlops.data.params import SynthConfig
from avlops.data.synth import generate_corpus
from avlops.evaluation.blessing import Verdict, write_verdict
from avlops.fileio import sha256_file
from avlops.monitoring.probe import GoldenProbe
from avlops.preprocessing.params import PreprocessConfig, SamplingMode
from avlops.preprocessing.run import preprocess_manifest
from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
from avlops.rollout.controller import Controller, RolloutState
from avlops.rollout.platform import down, up
from avlops.rollout.spec import load_rollout
from avlops.serving.bundle import load_model
from avlops.serving.catalogue import build_catalogue
from avlops.serving.client import ServingClient, ServingError
from avlops.training.loop import train
from avlops.training.params import TrainConfig, resolve

QUERY = "a red circle moves left while a high tone plays"
PLAN = ["healthy", "errors", "latency", "corrupted", "killed"]


def tiny_model(root: Path) -> dict[str, Path]:
    """Corpus, preprocessed data, a tiny trained checkpoint, its blessing and catalogue."""
    generate_corpus(
        SynthConfig(out=str(root / "synth"), clips=24, seconds=1.0, fps=4, size=32, workers=1), progress=False
    )
    manifest = root / "synth" / "manifest.jsonl"
    pre = PreprocessConfig(
        manifest=str(manifest),
        out=str(root / "data"),
        resolution=32,
        frames=2,
        eval_frames=2,
        target_length=128,
        sample_rate=16000,
        audio_slices=1,
        workers=1,
        shard_size=8,
        sampling=SamplingMode.EVAL,
    )
    preprocess_manifest(manifest, root / "data", pre, progress=False)
    cfg = TrainConfig.model_validate(
        {
            "model": "tiny",
            "batch_size": 8,
            "steps": 120,
            "seed": 0,
            "num_workers": 0,
            "checkpoint_every": 1000,
            "keep_last": 1,
            "optimizer": {"lr": 2e-3},
            "objective": {"groups": ["tv", "ta", "tav"], "similarity": "fine", "caption": {"groups": ["tav"]}},
        }
    )
    checkpoint = Path(str(train(resolve(cfg), root / "data", root / "run", progress=False).checkpoint))
    return {
        "manifest": manifest,
        "data": root / "data",
        "checkpoint": checkpoint,
        **_bless(root / "healthy", checkpoint, root / "data"),
    }


def _bless(folder: Path, checkpoint: Path, data: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"metrics": {}}))
    write_verdict(folder, Verdict(True, ["benchmark: blessed by this script"], [], str(checkpoint)))
    sha = sha256_file(checkpoint / "model.safetensors")
    catalogue = build_catalogue(load_model(checkpoint), data, checkpoint_sha256=sha).save(folder / "catalogue")
    return {"eval": folder, "catalogue": catalogue}


def corrupt(checkpoint: Path, dest: Path, data: Path, scale: float = 1.0) -> dict[str, Path]:
    """A copy of ``checkpoint`` with noise of ``scale`` times each tensor's std added to every float tensor."""
    shutil.copytree(checkpoint, dest)
    weights = load_file(dest / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    noisy = {
        k: (v + scale * v.float().std().nan_to_num(0.0) * torch.randn(v.shape, generator=g)).to(v.dtype)
        if v.is_floating_point() and v.numel() > 1
        else v
        for k, v in weights.items()
    }
    save_file(noisy, dest / "model.safetensors")
    return {"checkpoint": dest, **_bless(dest.parent / f"{dest.name}-eval", dest, data)}


@dataclass
class Load:
    """Closed-loop gRPC searches through Envoy from ``threads`` clients; every request is recorded."""

    address: str
    threads: int = 2
    records: list[tuple[float, bool, float, str]] = field(default_factory=list)  # (start, ok, seconds, error)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self) -> None:
        with ServingClient(self.address, retries=0, timeout_s=10) as client:
            while not self._stop.is_set():
                t0 = time.time()
                try:
                    client.search(QUERY, 3)
                    self.records.append((t0, True, time.time() - t0, ""))
                except ServingError as err:
                    self.records.append((t0, False, time.time() - t0, err.status))

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)

    def between(self, start: float, end: float) -> tuple[int, int]:
        rows = [r for r in self.records if start <= r[0] <= end]
        return len(rows), sum(1 for r in rows if not r[1])


def grpc_counts(admin: str, cluster: str) -> tuple[float, float]:
    """Envoy's (total, failed) gRPC ModelInfer requests routed to ``cluster``."""
    with urllib.request.urlopen(f"{admin}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    total = success = 0.0
    for line in text.splitlines():
        if f'envoy_cluster_name="{cluster}"' not in line:
            continue
        if line.startswith("envoy_cluster_grpc_ModelInfer_total{"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("envoy_cluster_grpc_ModelInfer_success{"):
            success = float(line.rsplit(" ", 1)[1])
    return total, total - success


def scenario(
    name: str,
    workdir: Path,
    version: int,
    spec_path: Path,
    load: Load,
    probe: GoldenProbe,
    fault: Callable[[Controller, RolloutState], bool] | None,
) -> dict[str, Any]:
    controller = Controller(workdir, hooks=[probe.hook()])
    admin = controller.platform.envoy().admin
    state = controller.begin(version, load_rollout(spec_path), str(spec_path))
    before = {s: grpc_counts(admin, s) for s in ("blue", "green")}
    fault_at: list[float] = []

    def hook(c: Controller, s: RolloutState) -> None:
        if fault is not None and not fault_at and fault(c, s):
            fault_at.append(time.time())

    controller.hooks.append(hook)
    started = time.time()
    state = controller.run()
    after = {s: grpc_counts(admin, s) for s in ("blue", "green")}
    delta = {s: (after[s][0] - before[s][0], after[s][1] - before[s][1]) for s in after}
    requests, failed = load.between(started, state.finished or time.time())
    return {
        "scenario": name,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "version": version,
        "decision": state.phase.value,
        "reasons": state.reasons,
        "seconds_to_decision": round((state.finished or started) - started, 1),
        "seconds_fault_to_decision": round((state.finished or 0) - fault_at[0], 1) if fault_at else None,
        "requests": requests,
        "failed_requests": failed,
        "failed_share": round(failed / requests, 4) if requests else None,
        "stable_track": {"requests": int(delta[state.stable_slot][0]), "failed": int(delta[state.stable_slot][1])},
        "canary_track": {"requests": int(delta[state.canary_slot][0]), "failed": int(delta[state.canary_slot][1])},
        "analysis": [
            {
                "template": r.template,
                "step": r.step,
                "phase": r.phase.value,
                "metrics": {
                    m.name: [round(v[0], 4) if v else None for v in [ms.value for ms in m.measurements]]
                    for m in r.metrics
                },
            }
            for r in state.runs
        ],
    }


def envoy_overhead(direct: str, proxied: str, rounds: int = 6, per_round: int = 100) -> dict[str, Any]:
    """Sequential searches straight to the server and through Envoy, interleaved in rounds (ms)."""
    samples: dict[str, list[float]] = {"direct": [], "envoy": []}
    with ServingClient(direct) as d, ServingClient(proxied) as p:
        for c in (d, p):
            for _ in range(20):
                c.search(QUERY, 3)
        for i in range(rounds):
            order = [("direct", d), ("envoy", p)] if i % 2 == 0 else [("envoy", p), ("direct", d)]
            for name, client in order:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    client.search(QUERY, 3)
                    samples[name].append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {}
    for name, xs in samples.items():
        out[name] = {
            "n": len(xs),
            "p50_ms": round(float(np.percentile(xs, 50)), 3),
            "p99_ms": round(float(np.percentile(xs, 99)), 3),
        }
    out["ratio_p50"] = round(out["envoy"]["p50_ms"] / out["direct"]["p50_ms"], 3)
    out["ratio_p99"] = round(out["envoy"]["p99_ms"] / out["direct"]["p99_ms"], 3)
    out["added_p50_ms"] = round(out["envoy"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["added_p99_ms"] = round(out["envoy"]["p99_ms"] - out["direct"]["p99_ms"], 3)
    return out


def operator_view(workdir: Path, out: Path, settle_s: float = 20.0) -> None:
    """``avlops rollout status`` into ``out/status.txt`` and ``avlops monitor report`` PNGs into ``out``, once
    Prometheus has scraped ``settle_s`` past the decision (the plots end there)."""
    import contextlib
    import io

    from avlops.cli import main as cli

    state = Controller(workdir).state()
    assert state is not None and state.finished is not None
    while time.time() < state.finished + settle_s + 5:  # the report's window ends 20 s after the decision
        time.sleep(0.5)
    out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert cli(["rollout", "status", "--workdir", str(workdir)]) == 0
    (out / "status.txt").write_text(text.getvalue())
    assert cli(["monitor", "report", "--workdir", str(workdir), "--out", str(out)]) == 0


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Rollout benchmark",
        "",
        f"Run {r['date']} with `{r['command']}`; spec `{r['spec']}`; load: {r['load_threads']} closed-loop gRPC "
        "clients through Envoy for the whole run. Times include starting the canary's Triton server.",
        "",
        "| scenario | decision | s to decision | s fault→decision | requests | failed | stable track failed "
        "| canary track failed / requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r["scenarios"]:
        lines.append(
            f"| {s['scenario']} | {s['decision']} | {s['seconds_to_decision']} "
            f"| {s['seconds_fault_to_decision'] or '-'} | "
            f"{s['requests']} | {s['failed_requests']} | {s['stable_track']['failed']} | "
            f"{s['canary_track']['failed']} / {s['canary_track']['requests']} |"
        )
    runs = sorted({s.get("date", r["date"]) for s in r["scenarios"]})
    if len(runs) > 1:
        lines += [
            "",
            "Scenarios from more than one run: "
            + ", ".join(f"{s['scenario']} {s.get('date', r['date'])}" for s in r["scenarios"])
            + ".",
        ]
    lines += ["", "Reasons for the rollbacks:", ""]
    for s in r["scenarios"]:
        if s["reasons"]:
            lines.append(f"- **{s['scenario']}**: {'; '.join(s['reasons'])}")
    e = r["envoy_overhead"]
    lines += [
        "",
        "## Envoy's added latency (tiny model's `search`, sequential, interleaved rounds)",
        "",
        "| path | n | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| direct to Triton | {e['direct']['n']} | {e['direct']['p50_ms']} | {e['direct']['p99_ms']} |",
        f"| through Envoy | {e['envoy']['n']} | {e['envoy']['p50_ms']} | {e['envoy']['p99_ms']} |",
        "",
        f"Ratio through Envoy / direct: p50 {e['ratio_p50']}, p99 {e['ratio_p99']} "
        f"(added {e['added_p50_ms']} ms at p50, {e['added_p99_ms']} ms at p99).",
        "",
        *machine_table(r["machine"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--spec", type=Path, default=Path("configs/rollout/default.yaml"))
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument("--report", type=Path, help="write each scenario's monitor report and status under this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="avlops-bench-rollout-") as tmp:
        root = Path(tmp)
        model = tiny_model(root)
        bad = corrupt(model["checkpoint"], root / "corrupted", model["data"])
        cfg = RegisterConfig.model_validate({"repository": str(root / "registry")})
        healthy = [
            register_model(model["checkpoint"], model["eval"], model["catalogue"], cfg, data_dir=model["data"]).version
            for _ in range(5)
        ]
        corrupted = register_model(
            bad["checkpoint"], bad["eval"], bad["catalogue"], cfg, data_dir=model["data"]
        ).version
        slow_cfg = RegisterConfig.model_validate(
            {"repository": str(root / "registry"), "batching": {"max_queue_delay_us": 100_000}}
        )
        slow = register_model(model["checkpoint"], model["eval"], model["catalogue"], slow_cfg, data_dir=model["data"])
        workdir = root / "platform"
        platform = up(workdir, root / "registry", healthy[0])
        load = Load(platform.address).start()
        probe = GoldenProbe.from_manifest(model["manifest"])
        results = []

        def inject(**fault: int) -> Callable[[Controller, RolloutState], bool]:
            def go(c: Controller, s: RolloutState) -> bool:
                if s.weight > 0:
                    c.platform.envoy().inject_fault(s.canary_slot, **fault)
                    return True
                return False

            return go

        def kill(c: Controller, s: RolloutState) -> bool:
            if s.weight > 0 and any(m.measurements for r in s.runs for m in r.metrics):
                c.platform.server(s.canary_slot).signal(signal.SIGKILL)
                return True
            return False

        plan = [
            ("healthy", healthy[1], None),
            ("errors", healthy[2], inject(abort_percent=20)),
            ("latency", slow.version, None),
            ("corrupted", corrupted, None),
            ("killed", healthy[4], kill),
        ]
        try:
            for name, version, fault in plan:
                if args.only and name not in args.only:
                    continue
                print(f"scenario {name}: version {version}", flush=True)
                result = scenario(name, workdir, version, args.spec, load, probe, fault)
                for slot in ("blue", "green"):
                    platform.envoy().inject_fault(slot)
                print(
                    json.dumps(
                        {k: result[k] for k in ("decision", "seconds_to_decision", "failed_requests", "reasons")}
                    ),
                    flush=True,
                )
                results.append(result)
                if args.report is not None:
                    operator_view(workdir, args.report / name)
            from avlops.rollout.platform import load as load_platform

            p = load_platform(workdir)
            stable = p.slot_of("stable")
            assert stable is not None
            load.stop()
            overhead = envoy_overhead(p.grpc(stable), p.address)
        finally:
            load.stop()
            down(workdir)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "uv run python bench/rollout.py"
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + (f" --report {args.report}" if args.report else ""),
        "spec": str(args.spec),
        "load_threads": load.threads,
        "seconds_total": round(time.time() - t_start, 1),
        "scenarios": results,
        "envoy_overhead": overhead,
        "machine": machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "rollout.json"
    if args.only and previous.is_file():  # a partial rerun replaces only its scenarios
        before = json.loads(previous.read_text())
        kept = [
            {**s, "date": s.get("date", before["date"])} for s in before["scenarios"] if s["scenario"] not in args.only
        ]
        report["scenarios"] = sorted(kept + results, key=lambda s: PLAN.index(s["scenario"]))
    (args.out / "rollout.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "rollout.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

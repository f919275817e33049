"""Benchmark the serving start-up: time to ready, how late readiness is seen, and the memory of the process tree.

    uv run python bench/startup.py [--rounds 2] [--baseline-rev e903c38] [--model small]

Model: random weights of ``configs/model/<model>.yaml`` and a random 200-clip catalogue (as bench/triton_serving.py;
start-up and memory do not depend on the weights), registered into a temporary repository and served by
``avlops.serving.server.TritonServer``.

Two layouts of the same repository, in alternating rounds of the same run:

- ``lean``: this tree's handlers (text preprocessing, encoders, clip pooling and catalogue search without torch);
- ``baseline``: the code of ``--baseline-rev`` (every model process imports torch; separate media and array
  preprocessing): its ``src/`` exported with ``git archive`` registers the same checkpoint, catalogue and settings
  into a second repository whose ``model.py`` files put that tree first on ``sys.path``.

Per round: seconds from launching ``tritonserver`` to the first ready answer of each of two pollers running side by
side — ``fresh`` (what ``TritonServer.start`` does now: ``GET /v2/health/ready`` on a new connection every 0.1 s) and
``long-lived`` (the old way: one gRPC client made before the server listens, ``is_server_ready`` every 0.25 s) — and
the moment Triton's own log says it is ready (its HTTP service started after every model loaded); then, once ready
and after one search, the RSS (and PSS) summed over the server's process tree (psutil), and how many of its processes
have torch loaded. Before each round the script waits for an idle machine (``--min-idle``). Writes
``bench/results/startup.json`` and ``startup.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from machine import machine, machine_table, wait_for_idle

from avlops.config import load_section, load_yaml
from avlops.evaluation.blessing import Verdict, write_verdict
from avlops.evaluation.checkpoint import load_for_evaluation
from avlops.fileio import sha256_file
from avlops.models.vla import VLAConfig, VLAModel
from avlops.preprocessing.params import PreprocessConfig
from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
from avlops.serving.catalogue import Catalogue
from avlops.serving.client import ServingClient
from avlops.serving.server import TritonServer, http_ready
from avlops.training.checkpoint import save_checkpoint
from avlops.training.params import fit_preprocess

ROOT = Path(__file__).resolve().parent.parent
OBJECTIVE = {"groups": ["tv", "ta", "tav"], "similarity": "fine", "caption": {"style": "masked", "groups": ["tav"]}}
_LOG_TIME = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+)")


def random_repository(tmp: Path, model_name: str, limits: dict[str, Any] | None = None) -> Path:
    """A registered version of random ``model_name`` weights with a random 200-clip catalogue (``limits``: the
    registry's request limits, default its defaults)."""
    cfg = VLAConfig.from_dict(load_yaml(ROOT / "configs" / "model" / f"{model_name}.yaml"))
    torch.manual_seed(0)
    run = tmp / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"objective": OBJECTIVE}), encoding="utf-8")
    saved = save_checkpoint(run / "checkpoints", 1, VLAModel(cfg).eval(), {}, {"step": 1}, cfg.to_dict(), keep_last=1)
    checkpoint = saved.path
    model = load_for_evaluation(checkpoint, device="cpu").model
    g, n, c = torch.Generator().manual_seed(1), 200, model.cfg.embed_dim
    pre = fit_preprocess(load_section(ROOT / "params.yaml", "preprocess", PreprocessConfig), model_name)
    frames = pre.eval_frames
    catalogue = Catalogue(
        [f"clip-{i:04d}" for i in range(n)],
        ["test"] * n,
        torch.randn(n, frames, c, generator=g),
        torch.ones(n, frames, dtype=torch.bool),
        torch.randn(n, 1, c, generator=g),
        torch.rand(n, 1, generator=g) > 0.1,
        {"checkpoint_sha256": sha256_file(checkpoint / "model.safetensors"), "data": "random"},
    ).save(tmp / "catalogue")
    eval_dir = tmp / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text("{}", encoding="utf-8")
    write_verdict(eval_dir, Verdict(True, ["bench/startup.py: a start-up measurement"], [], str(checkpoint)))
    repository = tmp / "registry"
    cfg_register = RegisterConfig.model_validate({"repository": str(repository), "limits": limits or {}})
    register_model(checkpoint, eval_dir, catalogue, cfg_register, preprocess=pre)
    inputs = {"checkpoint": str(checkpoint), "eval_dir": str(eval_dir), "catalogue": str(catalogue)}
    inputs["preprocess"] = pre.model_dump(mode="json", exclude_defaults=True)
    (tmp / "inputs.json").write_text(json.dumps(inputs), encoding="utf-8")  # what baseline_repository registers again
    return repository


_REGISTER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from avlops.preprocessing.params import PreprocessConfig
from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
a = json.loads(Path(sys.argv[2]).read_text())
cfg = RegisterConfig.model_validate({"repository": sys.argv[3]})
pre = PreprocessConfig.model_validate(a["preprocess"])
register_model(Path(a["checkpoint"]), Path(a["eval_dir"]), Path(a["catalogue"]), cfg, preprocess=pre)
"""


def baseline_repository(repository: Path, rev: str, dest: Path) -> Path:
    """The same inputs registered by ``rev``'s code (its ``src/``, git archive, under ``dest``), each version's
    ``model.py`` putting that tree first on ``sys.path`` before importing avlops: the server runs ``rev``'s handlers."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"], check=True, capture_output=True
    ).stdout
    tar_path = dest / "baseline.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    src, copy = dest / "src", dest / "registry"
    inputs = repository.parent / "inputs.json"
    subprocess.run([sys.executable, "-c", _REGISTER, str(src), str(inputs), str(copy)], check=True, cwd=dest)
    for model_py in (copy / "models").glob("*/*/model.py"):
        text = model_py.read_text(encoding="utf-8")
        model_py.write_text(f"import sys\nsys.path.insert(0, {str(src)!r})\n" + text, encoding="utf-8")
    return copy


def triton_ready_at(log: Path) -> float | None:
    """Wall-clock time (epoch s) at which Triton's log says it is ready: its HTTP service started, which it does after
    loading every model."""
    today = dt.datetime.now(dt.UTC)
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if m and "Started HTTPService" in line:
            stamp = dt.datetime.strptime(f"{today.year}{m[1]} {m[2]}", "%Y%m%d %H:%M:%S.%f").replace(tzinfo=dt.UTC)
            return stamp.timestamp()
    return None


def tree_memory(pid: int) -> dict[str, Any]:
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rss = pss = torch_procs = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
            torch_procs += any("libtorch_cpu" in m.path for m in p.memory_maps(grouped=True))
        except psutil.Error:
            continue
    return {"processes": len(procs), "rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "torch_processes": torch_procs}


def one_round(repository: Path, layout: str, scratch: Path) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    server = TritonServer(repository / "models", config_name="champion", log_path=scratch / f"{layout}.log")
    seen: dict[str, float] = {}
    stop = threading.Event()
    ports: dict[str, int] = {}

    def fresh() -> None:
        while not stop.is_set():
            if ports and http_ready("127.0.0.1", ports["http"]):
                seen["fresh"] = time.time()
                return
            time.sleep(0.1)

    def long_lived() -> None:
        while not ports and not stop.is_set():
            time.sleep(0.01)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        while not stop.is_set():
            try:
                if client.is_server_ready(client_timeout=2.0):
                    seen["long-lived"] = time.time()
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)

    threads = [threading.Thread(target=f, daemon=True) for f in (fresh, long_lived)]
    t0 = time.time()
    try:
        # start() picks free ports then blocks until ready: the pollers learn the ports from the endpoints
        starter = threading.Thread(target=server.start, daemon=True)
        starter.start()
        while server._endpoints is None:
            time.sleep(0.005)
        ports.update(grpc=server.endpoints.grpc_port, http=server.endpoints.http_port)
        for t in threads:
            t.start()
        starter.join()
        returned = time.time()
        for t in threads:
            t.join(timeout=180)
        with ServingClient(server.endpoints.grpc) as client:
            client.search("a red circle moves left while a high tone plays", k=5)
        memory = tree_memory(server.process.pid)  # type: ignore[union-attr]
    finally:
        stop.set()
        server.stop()
    ready = triton_ready_at(scratch / f"{layout}.log")
    return {
        "layout": layout,
        "ready_s": None if ready is None else ready - t0,
        "start_returned_s": returned - t0,
        "fresh_seen_s": seen.get("fresh", float("nan")) - t0,
        "long_lived_seen_s": seen.get("long-lived", float("nan")) - t0,
        "fresh_late_s": None if ready is None else seen.get("fresh", float("nan")) - ready,
        "long_lived_late_s": None if ready is None else seen.get("long-lived", float("nan")) - ready,
        **memory,
    }


def summarise(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for layout in sorted({r["layout"] for r in rounds}):
        rs = [r for r in rounds if r["layout"] == layout]
        out[layout] = {
            k: float(statistics.median(float(r[k]) for r in rs))
            for k in rs[0]
            if k != "layout" and rs[0][k] is not None
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    s, m = result["summary"], result["settings"]
    lean, base = s["lean"], s.get("baseline")
    lines = [
        "# Serving start-up and memory",
        "",
        f"`uv run python bench/startup.py --rounds {m['rounds']} --model {m['model']}` on {result['date']}: random "
        f"`{m['model']}` weights, a 200-clip catalogue, one registered version served by `TritonServer`; medians of "
        f"{m['rounds']} rounds per layout, layouts alternating, each round after waiting (up to 2 minutes) for "
        f"{100 * m['min_idle']:.0f} % idle CPU; the idle share each round started with is in the table below.",
        "",
        "| | lean (this tree) | baseline (" + m["baseline_rev"] + ") | baseline / lean |",
        "|---|---|---|---|",
    ]

    def row(label: str, key: str, fmt: str) -> str:
        if base is None:
            return f"| {label} | {lean[key]:{fmt}} | - | - |"
        ratio = base[key] / lean[key] if lean[key] else float("nan")
        return f"| {label} | {lean[key]:{fmt}} | {base[key]:{fmt}} | {ratio:.2f}x |"

    lines += [
        row("launch → ready (Triton's log), s", "ready_s", ".1f"),
        row("launch → `TritonServer.start()` returned, s", "start_returned_s", ".1f"),
        row("readiness seen late, fresh connections every 0.1 s, s", "fresh_late_s", ".2f"),
        row("readiness seen late, one long-lived gRPC client (old), s", "long_lived_late_s", ".2f"),
        row("process-tree RSS after ready + one search, MB", "rss_mb", ".0f"),
        row("process-tree PSS, MB", "pss_mb", ".0f"),
        row("processes", "processes", ".0f"),
        row("processes with torch loaded", "torch_processes", ".0f"),
        "",
        "RSS is summed over the processes (shared pages count once per process, as `ps` shows them); PSS shares them "
        'out. "Seen late" is the time from the moment Triton\'s log says it is ready (HTTP service started) to the '
        "first ready answer a poller got; both pollers ran side by side in every round.",
        "",
        "## Rounds",
        "",
        "| layout | idle before | ready s | start() s | fresh late s | long-lived late s | RSS MB | PSS MB | torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rounds"]:
        lines.append(
            f"| {r['layout']} | {100 * r['idle_before']:.0f} % | {r['ready_s']:.1f} | {r['start_returned_s']:.1f} | "
            f"{r['fresh_late_s']:.2f} | {r['long_lived_late_s']:.2f} | {r['rss_mb']:.0f} | {r['pss_mb']:.0f} | "
            f"{r['torch_processes']} |"
        )
    lines += ["", *machine_table(result["machine"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="small")
    parser.add_argument("--baseline-rev", default="e903c38", help="the layout before the lean handlers; '' = none")
    parser.add_argument("--min-idle", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="avlops-startup-") as tmp_name:
        tmp = Path(tmp_name)
        repository = random_repository(tmp / "repo", args.model)
        layouts = [("lean", repository)]
        if args.baseline_rev:
            (tmp / "baseline").mkdir()
            layouts.append(("baseline", baseline_repository(repository, args.baseline_rev, tmp / "baseline")))
        for i in range(args.rounds):
            for layout, repo in layouts if i % 2 == 0 else layouts[::-1]:
                idle = wait_for_idle(args.min_idle, f"{layout} round {i + 1}")
                r = {**one_round(repo, layout, tmp), "idle_before": idle}
                print(json.dumps(r), file=sys.stderr)
                rounds.append(r)
    summary = summarise(rounds)
    if "baseline" in summary and summary["baseline"]["torch_processes"] <= summary["lean"]["torch_processes"]:
        raise SystemExit(f"the baseline layout did not take effect (torch processes): {summary}")
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {
            "rounds": args.rounds,
            "model": args.model,
            "baseline_rev": args.baseline_rev,
            "min_idle": args.min_idle,
        },
        "machine": machine(torch=torch.__version__, numpy=np.__version__),
        "rounds": rounds,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "startup.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""bench/soak.py runs end to end at a tiny scale: mixed load through a real Envoy in front of a real Triton server,
a killed stub and an oversized burst; it records what was served, errors by code, latency windows from Envoy's
histograms, memory samples and a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_soak_records_load_faults_latency_and_memory(tmp_path: Path) -> None:
    cmd = [sys.executable, "bench/soak.py", "--minutes", "0.75", "--model", "tiny", "--burst", "5", "--burst-mb", "2"]
    cmd += ["--max-media-mb", "1"]  # the proxy's limit: 1 MiB + 64 KiB, so the 2 MB burst is oversized
    done = subprocess.run([*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert (tmp_path / "soak.json").is_file(), done.stderr[-3000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    a = result["analysis"]
    assert set(a["served"]) == {"search", "embed_text", "clip"}, a["served"]
    assert a["stub_killed_at_s"] is not None  # the text_encoder stub was found and killed
    # the errors after the kill (until searches succeed again: the supervisor restarts the server) are attributed to
    # it, none elsewhere
    assert a["burst"] == {"RESOURCE_EXHAUSTED": 5}  # every oversized request refused at the proxy
    assert a["errors_outside_faults"] == {}, a["errors_outside_examples"]
    assert any(w["p50_ms_envoy"] == w["p50_ms_envoy"] for w in a["windows"])  # some window has Envoy latencies
    # while the supervisor restarts the server there is no process tree to measure (NaN)
    measured = [s["rss_mb"] for s in result["samples"] if s["rss_mb"] == s["rss_mb"]]
    assert len(measured) >= 3 and all(rss > 0 for rss in measured)
    assert (tmp_path / "soak.png").stat().st_size > 0 and (tmp_path / "soak.md").is_file()
    assert done.returncode == 0, done.stdout[-2000:]

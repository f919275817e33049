"""The loss-curve report of a run folder: read back from metrics.jsonl, summarised in words and plotted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avlops.training.report import plot_loss_curves, read_run, summary_lines


def _write_run(out: Path, steps: int, with_result: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(steps, 0, -1):  # written out of order: the reader sorts by step
        loss = {"total": 10.0 / step, "mga": 4.0 / step, "mga/tv": 5.0 / step, "mgc": 6.0 / step}
        lines.append(json.dumps({"step": step, "loss": loss}))
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if with_result:
        result = {"finished": True, "step": steps, "total_steps": steps, "world_size": 1, "seconds": 12.0}
        (out / "result.json").write_text(json.dumps({**result, "samples_per_s": 40.0, "data_wait_share": 0.02}))


def test_summary_names_the_curve_and_each_term(tmp_path: Path) -> None:
    _write_run(tmp_path, steps=10)
    report = read_run(tmp_path)
    assert report.steps == list(range(1, 11)) and report.terms == ["total", "mga", "mgc", "mga/tv"]
    lines = summary_lines(report, points=4)
    assert lines[0] == "loss curve (step: total): 1: 10.000  4: 2.500  7: 1.429  10: 1.000"
    assert lines[1] == "terms, first -> last logged step: mga 4.000 -> 0.400, mgc 6.000 -> 0.600, mga/tv 5.000 -> 0.500"
    assert lines[2] == "finished at step 10/10 on 1 process(es), 12 s, 40.0 samples/s, 2 % waiting for data"


def test_plot_is_a_png_beside_the_log(tmp_path: Path) -> None:
    _write_run(tmp_path, steps=3, with_result=False)
    report = read_run(tmp_path)
    assert report.result == {} and len(summary_lines(report)) == 2
    path = plot_loss_curves(report)
    assert path == tmp_path / "loss_curve.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_log_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no training log \(is .* an `avlops train` --out folder\?\)"):
        read_run(tmp_path)

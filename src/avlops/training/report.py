"""What a finished (or stopped) training run looked like: the loss curve read back from ``metrics.jsonl``.

:func:`read_run` turns a run folder into a :class:`RunReport`; :func:`summary_lines` prints the loss curve as a few
lines a person can read in a terminal (the total at evenly spaced steps, and each term's first -> last value);
:func:`plot_loss_curves` draws every term against the step into a PNG beside the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avlops.training.metrics import LOG_NAME

__all__ = ["PLOT_NAME", "RunReport", "plot_loss_curves", "read_run", "summary_lines"]

PLOT_NAME = "loss_curve.png"
_RESULT_NAME = "result.json"  # avlops.training.loop.RESULT_NAME (not imported: the loop pulls in torch)


@dataclass(frozen=True)
class RunReport:
    out_dir: Path
    steps: list[int]  # logged steps, ascending
    loss: dict[str, list[float]]  # term ("total", "mga", "mga/tv", ...) -> value at each logged step
    result: dict[str, Any]  # result.json; {} while the run has not written one

    @property
    def terms(self) -> list[str]:
        """Top-level terms first (total, mga, mgc, ...), then the per-group ones (mga/tv, ...)."""
        return sorted(self.loss, key=lambda k: (k != "total", "/" in k, k))


def read_run(out_dir: str | Path) -> RunReport:
    """Read ``metrics.jsonl`` (and ``result.json`` when present) of a run folder.

    Raises ``FileNotFoundError`` naming the log when the folder holds no training log.
    """
    out = Path(out_dir)
    log = out / LOG_NAME
    if not log.is_file():
        raise FileNotFoundError(f"{log}: no training log (is {out} an `avlops train` --out folder?)")
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    entries.sort(key=lambda e: int(e["step"]))
    terms = sorted({k for e in entries for k in e.get("loss", {})})
    loss = {t: [float(e["loss"].get(t, float("nan"))) for e in entries] for t in terms}
    result_path = out / _RESULT_NAME
    result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
    return RunReport(out, [int(e["step"]) for e in entries], loss, result)


def summary_lines(report: RunReport, points: int = 6) -> list[str]:
    """The loss curve in words: total loss at ``points`` evenly spaced logged steps, then each term first -> last."""
    if not report.steps:
        return [f"{report.out_dir}: the run logged no steps yet"]
    n = len(report.steps)
    picks = sorted({round(i * (n - 1) / max(points - 1, 1)) for i in range(points)})
    total = report.loss.get("total", [])
    curve = "  ".join(f"{report.steps[i]}: {total[i]:.3f}" for i in picks) if total else "(no total logged)"
    lines = [f"loss curve (step: total): {curve}"]
    changes = [f"{t} {v[0]:.3f} -> {v[-1]:.3f}" for t in report.terms if t != "total" and (v := report.loss[t])]
    if changes:
        lines.append("terms, first -> last logged step: " + ", ".join(changes))
    r = report.result
    if r:
        state = "finished" if r.get("finished") else "stopped"
        lines.append(
            f"{state} at step {r.get('step')}/{r.get('total_steps')} on {r.get('world_size')} process(es), "
            f"{r.get('seconds', 0.0):.0f} s, {r.get('samples_per_s', 0.0):.1f} samples/s, "
            f"{100 * r.get('data_wait_share', 0.0):.0f} % waiting for data"
        )
    return lines


def plot_loss_curves(report: RunReport, path: str | Path | None = None) -> Path:
    """Every loss term against the step (total and grouped terms in two panels); writes a PNG, returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    target = Path(path) if path is not None else report.out_dir / PLOT_NAME
    top = [t for t in report.terms if "/" not in t]
    groups = [t for t in report.terms if "/" in t]
    fig, axes = plt.subplots(1, 2 if groups else 1, figsize=(11 if groups else 6, 4), squeeze=False)
    for ax, names, title in ((axes[0][0], top, "loss terms"), (axes[0][-1], groups, "per modality group")):
        if not names:
            continue
        for name in names:
            ax.plot(report.steps, report.loss[name], label=name, linewidth=2 if name == "total" else 1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"training run {report.out_dir.name}")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target

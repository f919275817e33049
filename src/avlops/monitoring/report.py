"""``avlops monitor report``: PNG plots of a rollout from Prometheus, one per panel of the Grafana dashboard (the same
expressions: traffic split, error ratio, p50 / p99 latency per track, model quality) plus the analysis verdicts of
the rollout's state (every measurement, coloured by its result, with the weight changes marked)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avlops.monitoring.prometheus import PrometheusClient

__all__ = ["Panel", "dashboard_panels", "render_report"]

_COLOURS = {"Successful": "tab:green", "Failed": "tab:red", "Inconclusive": "tab:orange", "Error": "tab:purple"}


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    legend: str
    unit: str


def dashboard_panels(path: Path) -> list[Panel]:
    """Every (panel, target) of a Grafana dashboard JSON as a :class:`Panel`."""
    data = json.loads(Path(path).read_text())
    out = []
    for panel in data["panels"]:
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        for target in panel.get("targets", []):
            out.append(Panel(panel["title"], target["expr"], target.get("legendFormat", ""), unit))
    return out


def _legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_report(
    client: PrometheusClient,
    dashboard: Path,
    out: Path,
    *,
    start: float,
    end: float | None = None,
    step: float = 2.0,
    state: Any | None = None,
) -> list[Path]:
    """Write one PNG per dashboard panel over ``[start, end]`` (and ``verdicts.png`` when ``state`` is a rollout
    state); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time() if end is None else end
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for panel in dashboard_panels(dashboard):
        fig, ax = plt.subplots(figsize=(8, 3.2))
        data = client.api(
            "query_range", {"query": panel.expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        )
        for series in data["result"]:
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ax.plot(xs, ys, label=_legend(panel.legend, series["metric"]))
        if not data["result"]:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(loc="best", fontsize=8)
        _mark_events(ax, state, start)
        ax.set_title(panel.title)
        ax.set_xlim(0, end - start)
        ax.set_xlabel("seconds")
        ax.set_ylabel(panel.unit)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{_slug(panel.title)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files.append(path)
    if state is not None:
        files.append(_verdicts(state, out / "verdicts.png", start, end))
    return files


def _mark_events(ax: Any, state: Any | None, start: float) -> None:
    if state is None:
        return
    for event in state.events:
        if "weight" in event.text or event.text in ("Promoted", "Aborted"):
            ax.axvline(event.at - start, color="grey", linestyle=":", linewidth=1)


def _verdicts(state: Any, path: Path, start: float, end: float) -> Path:
    import matplotlib.pyplot as plt

    rows = [(f"{r.template}/{m.name} (step {r.step})", m) for r in state.runs for m in r.metrics]
    fig, ax = plt.subplots(figsize=(8, 0.6 * max(len(rows), 1) + 1.5))
    for y, (_, metric) in enumerate(rows):
        for ms in metric.measurements:
            ax.scatter(ms.at - start, y, color=_COLOURS.get(ms.phase.value, "black"), s=40)
        ax.text(1.01, y, metric.phase.value, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_xlim(0, end - start)  # the panels' time axis, so the plots read side by side
    ax.set_title(f"rollout {state.id}: version {state.version} over {state.stable_version}: {state.phase.value}")
    for phase, colour in _COLOURS.items():
        ax.scatter([], [], color=colour, label=phase)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7, ncol=4, frameon=False)  # under the axis
    _mark_events(ax, state, start)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path

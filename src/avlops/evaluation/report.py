"""The evaluation report: ``report.html`` and ``report.md`` with PNG plots under ``plots/``.

Contents: the blessing verdict and its checks; retrieval in the papers' layout (R@1/R@5/R@10, MedR, MeanR per task,
"+DSL" rows); captioning scores per group; the comparison with a baseline model when one is given; rank histograms,
recall-at-K curves and example queries with their top results (middle frames, or fbank images for clips without
video; the right clip framed in green); example generated captions next to their references; skipped tasks and notes.
The document is built once as a list of blocks and rendered to both formats.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from avlops.evaluation.blessing import Verdict
from avlops.evaluation.names import (
    CAPTION_METRICS,
    CAPTION_QUALITY,
    RETRIEVAL_METRICS,
    all_metric_names,
    backward,
    caption_key,
    forward,
    higher_is_better,
    retrieval_key,
)
from avlops.evaluation.results import TOP_K, Evaluation, EvaluationResult, RetrievalOutcome
from avlops.fileio import write_bytes_atomic
from avlops.modality import Modality

__all__ = ["REPORT_HTML", "REPORT_MD", "write_report"]

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
PLOTS = "plots"
HIST_MAX = 50  # rank histograms: one bar per rank up to this, then one bar for the rest


@dataclass(frozen=True)
class _Block:
    kind: str  # "h1", "h2", "p", "table", "img"
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _table(header: list[str], rows: list[list[str]]) -> _Block:
    return _Block("table", header=tuple(header), rows=tuple(tuple(r) for r in rows))


def _img(path: str, alt: str) -> _Block:
    return _Block("img", path, header=(alt,))


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


# ------------------------------------------------------------------------------------------------------ plots


def _save(fig: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return f"{PLOTS}/{path.name}"


def _rank_histogram(o: RetrievalOutcome, path: Path) -> str:
    fig = Figure(figsize=(7, 3))
    sides = [(forward(o.modality), o.ranks.forward), (backward(o.modality), o.ranks.backward)]
    shown = [(name, r) for name, r in sides if r is not None]
    for k, (name, ranks) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), k + 1)
        r = ranks.numpy()
        top = min(int(r.max()), HIST_MAX + 1)
        counts = np.bincount(np.minimum(r, HIST_MAX + 1), minlength=top + 1)[1 : top + 1]
        ax.bar(np.arange(1, top + 1), counts, width=0.9, color="tab:blue")
        ax.set_title(f"{name}: rank of the right {'clip' if name.startswith('t2') else 'caption'}", fontsize=9)
        ax.set_xlabel(f"rank (1 = top; {HIST_MAX + 1} = beyond {HIST_MAX})" if top > HIST_MAX else "rank (1 = top)")
        ax.set_ylabel("captions" if name.startswith("t2") else "clips")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path)


def _recall_curves(outcomes: list[RetrievalOutcome], path: Path) -> str:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for colour, o in zip(("tab:blue", "tab:orange", "tab:green"), outcomes, strict=False):
        for name, r, style in (
            (forward(o.modality), o.ranks.forward, "-"),
            (backward(o.modality), o.ranks.backward, "--"),
            (f"{forward(o.modality)} +DSL", o.ranks.forward_dsl, ":"),
        ):
            if r is None:
                continue
            n = o.gallery if name.startswith("t2") else o.queries
            ks = np.arange(1, n + 1)
            recall = 100 * (r.numpy()[None, :] <= ks[:, None]).mean(axis=1)
            ax.plot(ks, recall, style, color=colour, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _examples_figure(ev: Evaluation, o: RetrievalOutcome, path: Path) -> str:
    rows = o.examples
    fig = Figure(figsize=(2.0 * TOP_K + 3, 2.1 * len(rows)))
    grid = fig.add_gridspec(len(rows), TOP_K + 1, width_ratios=[3] + [2] * TOP_K)
    for i, e in enumerate(rows):
        label = fig.add_subplot(grid[i, 0])
        label.axis("off")
        query = textwrap.fill(ev.data.caption_text(e.caption), 34)
        label.text(0, 0.5, f"{query}\n\nright clip: rank {e.rank}", va="center", fontsize=8, wrap=True)
        for j, clip in enumerate(e.top):
            ax = fig.add_subplot(grid[i, j + 1])
            thumb = ev.data.thumbnail(clip, audio=o.modality is Modality.AUDIO).numpy()
            if thumb.ndim == 3:
                ax.imshow(thumb)
            else:
                ax.imshow(thumb, origin="lower", aspect="auto", cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            right = clip == e.clip
            for spine in ax.spines.values():
                spine.set_color("tab:green" if right else "0.7")
                spine.set_linewidth(4 if right else 1)
            ax.set_title(f"{j + 1}. {ev.data.clip_ids[clip]}", fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------- content

_DEFINITIONS = (
    "Metrics as VALOR defines them (papers.md §1.10): every caption is a query; ranks are 1-based and pessimistic on "
    "ties; MedR is torch.median (the lower middle); m2t ranks a clip's best caption; +DSL = dual-softmax re-ranking; "
    "caption scores are pycocoevalcap's ×100."
)


def _verdict_blocks(v: Verdict) -> list[_Block]:
    blocks = [_Block("h2", "Blessing"), _Block("p", f"**{'BLESSED' if v.blessed else 'NOT BLESSED'}**")]
    blocks += [_Block("p", "- " + r) for r in v.reasons]
    if v.checks:
        rows = [
            [c.metric, c.kind, _num(c.value), f"{c.op} {_num(c.bound)}", "pass" if c.passed else "FAIL"]
            for c in v.checks
        ]
        blocks.append(_table(["metric", "check", "value", "bound", "result"], rows))
    return blocks


def _retrieval_blocks(r: EvaluationResult) -> list[_Block]:
    cols = [m for m in RETRIEVAL_METRICS if m != "R@avg"]
    rows = []
    for dsl in (False, True):
        for m in Modality:
            for task in (forward(m), backward(m)):
                values = [r.metrics.get(retrieval_key(task, k, dsl)) for k in cols]
                if any(v is not None for v in values):
                    rows.append([task + (" +DSL" if dsl else ""), *(_num(v) for v in values)])
    if not rows:
        return []
    return [_Block("h2", "Retrieval"), _table(["task", *cols], rows)]


def _caption_blocks(r: EvaluationResult) -> list[_Block]:
    rows = [
        [m.value, *(_num(r.metrics.get(caption_key(m, k))) for k in CAPTION_METRICS)]
        for m in Modality
        if any(caption_key(m, k) in r.metrics for k in CAPTION_METRICS)
    ]
    if not rows:
        return []
    quality = [
        [m.value, *(_num(r.metrics.get(caption_key(m, k))) for k in CAPTION_QUALITY)]
        for m in Modality
        if caption_key(m, "empty") in r.metrics
    ]
    blocks = [_Block("h2", "Captioning (×100)"), _table(["from", *CAPTION_METRICS], rows)]
    if quality:  # the captions on their own: % empty / repetitive / degenerate, distinct n-grams in %
        blocks += [_Block("h2", "Generated captions (%)"), _table(["from", *CAPTION_QUALITY], quality)]
    return blocks


def _baseline_blocks(r: EvaluationResult, base: EvaluationResult) -> list[_Block]:
    rows = []
    for name in all_metric_names():
        if name in r.metrics and name in base.metrics:
            delta = r.metrics[name] - base.metrics[name]
            better = delta > 0 if higher_is_better(name) else delta < 0
            verdict = "same" if delta == 0 else ("better" if better else "worse")
            rows.append([name, _num(r.metrics[name]), _num(base.metrics[name]), f"{delta:+.2f}", verdict])
    blocks = [_Block("h2", "Against the baseline"), _Block("p", f"Baseline: `{base.checkpoint}` on `{base.data}`.")]
    if not rows:
        return [*blocks, _Block("p", "No metric in common.")]
    return [*blocks, _table(["metric", "this model", "baseline", "Δ", ""], rows)]


def _caption_examples(ev: Evaluation, n: int) -> list[_Block]:
    if not ev.captions or n == 0:
        return []
    clips = [i for i, c in enumerate(ev.data.clip_ids) if any(c in g for g in ev.captions.values())][:n]
    rows = []
    for i in clips:
        clip = ev.data.clip_ids[i]
        for m, generated in ev.captions.items():
            if clip in generated:
                rows.append([clip, m.value, generated[clip], " / ".join(ev.data.references[i][:3])])
    return [_Block("h2", "Example captions"), _table(["clip", "from", "generated", "references"], rows)]


def _document(out: Path, ev: Evaluation, verdict: Verdict, baseline: EvaluationResult | None) -> list[_Block]:
    r = ev.result
    step = f" (step {r.step})" if r.step is not None else ""
    blocks = [
        _Block("h1", "Evaluation report"),
        _Block(
            "p", f"Checkpoint `{r.checkpoint}`{step} on split `{r.split}` of `{r.data}` (references: `{r.manifest}`)."
        ),
        _Block("p", _DEFINITIONS),
    ]
    blocks += _verdict_blocks(verdict) + _retrieval_blocks(r) + _caption_blocks(r)
    if baseline is not None:
        blocks += _baseline_blocks(r, baseline)
    outcomes = list(ev.retrieval.values())
    if outcomes:
        blocks += [_Block("h2", "Ranks"), _img(_recall_curves(outcomes, out / PLOTS / "recall-at-k.png"), "R@K curves")]
        for o in outcomes:
            path = out / PLOTS / f"ranks-{o.modality.value}.png"
            blocks.append(_img(_rank_histogram(o, path), f"rank histogram {o.modality.value}"))
        blocks.append(_Block("h2", "Example queries"))
        for o in outcomes:
            if o.examples:
                what = f"{forward(o.modality)}: the top {TOP_K} of {o.gallery} clips (the right clip framed in green)"
                path = out / PLOTS / f"examples-{o.modality.value}.png"
                blocks += [_Block("p", what), _img(_examples_figure(ev, o, path), f"examples {o.modality.value}")]
    blocks += _caption_examples(ev, int(r.settings.get("examples", 4)))
    tasks = [[t, ", ".join(f"{k} {v}" for k, v in info.items())] for t, info in r.tasks.items()]
    blocks += [_Block("h2", "Tasks"), _table(["task", "size"], tasks)] if tasks else []
    if r.skipped:
        blocks += [_Block("h2", "Skipped"), _table(["task", "why"], [[k, v] for k, v in r.skipped.items()])]
    blocks += [_Block("p", f"Notes: {'; '.join(r.notes)}. Took {r.seconds:.1f} s.")]
    return blocks


# ---------------------------------------------------------------------------------------------------- render


def _markdown(blocks: list[_Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.text}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.text}", ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "img":
            lines += [f"![{b.header[0] if b.header else ''}]({b.text})", ""]
        else:
            lines.append("| " + " | ".join(b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
            lines.append("")
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in a paragraph, as HTML (everything else escaped)."""
    out = []
    for i, part in enumerate(html.escape(text).split("`")):
        out.append(f"<code>{part}</code>" if i % 2 else part)
    joined = "".join(out)
    pieces = joined.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))


def _html(blocks: list[_Block]) -> str:
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "img":
            body.append(
                f'<p><img src="{html.escape(b.text)}" alt="{html.escape(b.header[0] if b.header else "")}"></p>'
            )
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>avlops evaluation report</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    out: Path, ev: Evaluation, verdict: Verdict, baseline: EvaluationResult | None = None
) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` and ``plots/*.png`` into ``out``; returns the two report paths."""
    blocks = _document(out, ev, verdict, baseline)
    write_bytes_atomic(out / REPORT_HTML, _html(blocks).encode())
    write_bytes_atomic(out / REPORT_MD, _markdown(blocks).encode())
    return out / REPORT_HTML, out / REPORT_MD

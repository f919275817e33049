"""The modality experiment: does audio help, and does CLIP4VLA's audio type token?

On one synthetic corpus (colour, shape and motion can only be seen; pitch, noise and the spoken word can only be
heard; every caption states all of them) the experiment trains each :class:`Variant` with each seed, evaluates
every run on the test split with ``avlops evaluate``'s own code, and writes a table in the papers' style:
text→video, text→audio and text→audio+video R@1/5/10 and captioning CIDEr from video, audio and both, as
mean ± standard deviation over seeds. VALOR's Table 3 (VALOR-B vs VALOR⁻B) predicts that text→audio+video beats
text→video when captions mention sounds.

Everything lands under ``cfg.out``: ``data/`` (corpus and shards, made once), ``runs/<variant>/seed-<s>/`` (training
runs, resumed when present), ``eval/<variant>/seed-<s>/`` (reports), and ``results.json``, ``table.md`` and
``modality.png``. A rerun reuses every finished step, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from avlops.config import load_yaml, override
from avlops.data.synth import MANIFEST, generate_corpus
from avlops.evaluation.names import caption_key, forward, retrieval_key
from avlops.evaluation.params import EvaluateConfig
from avlops.evaluation.results import read_metrics
from avlops.evaluation.run import run_evaluation
from avlops.experiments.params import ModalityExperimentConfig, Variant
from avlops.modality import Modality
from avlops.preprocessing.run import preprocess_manifest
from avlops.training.checkpoint import CHECKPOINT_DIR, latest_checkpoint
from avlops.training.loop import train
from avlops.training.params import TrainConfig, model_config_path, plain, resolve

__all__ = [
    "CAPTION_COLUMNS",
    "RETRIEVAL_COLUMNS",
    "ExperimentResult",
    "RunOutcome",
    "eval_config",
    "markdown_table",
    "paired_differences",
    "plot_results",
    "run_experiment",
    "train_config",
]

log = logging.getLogger(__name__)

#: the table's retrieval columns (text→group, R@1/5/10) and captioning columns (CIDEr from each group)
RETRIEVAL_COLUMNS = tuple((m, k) for m in Modality for k in ("R@1", "R@5", "R@10"))
CAPTION_COLUMNS = tuple(Modality)
_GROUP_NAMES = {Modality.VIDEO: "video", Modality.AUDIO: "audio", Modality.AUDIOVISUAL: "audio+video"}
_DESCRIPTIONS = {
    Variant.FULL: "MGA over T–V, T–A, T–AV; captions from video, audio and both (MGC); audio type token "
    "(VALOR-B + CLIP4VLA)",
    Variant.VIDEO_ONLY: "trained on frames alone: MGA T–V, captions from video (VALOR⁻B)",
    Variant.NO_TYPE_TOKEN: "as full, without the audio type token (CLIP4VLA ablation)",
}


@dataclass(frozen=True)
class RunOutcome:
    variant: Variant
    seed: int
    checkpoint: str
    eval_dir: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class ExperimentResult:
    out: Path
    corpus: dict[str, Any]  # clips per split and audio type, as the generator reported them
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    runs: tuple[RunOutcome, ...]

    def values(self, variant: Variant, metric: str) -> list[float]:
        """``metric`` of every seed's run of ``variant`` (runs that did not compute it are left out)."""
        return [r.metrics[metric] for r in self.runs if r.variant is variant and metric in r.metrics]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "corpus": self.corpus,
            "seeds": list(self.seeds),
            "variants": [v.value for v in self.variants],
            "runs": [{**asdict(r), "variant": r.variant.value} for r in self.runs],
        }


# ----------------------------------------------------------------------------------------------- per-variant configs


def train_config(base: TrainConfig, variant: Variant, seed: int, models_dir: Path) -> TrainConfig:
    """The recipe ``base`` changed as ``variant`` says, with ``seed``; derived model YAMLs go to ``models_dir``."""
    cfg = override(base, seed=seed)
    if variant is Variant.VIDEO_ONLY:
        objective: dict[str, Any] = plain(cfg.objective)
        objective["groups"] = ["tv"]
        objective["caption"] = {**dict(objective.get("caption") or {}), "groups": ["tv"]}
        objective.pop("audio_self", None)  # an audio-only term: the video-only arm never sees audio
        return override(cfg, objective=objective)
    if variant is Variant.NO_TYPE_TOKEN:
        source = model_config_path(cfg.model)
        model = load_yaml(source)
        model["audio"] = {**model.get("audio", {}), "type_token": False}
        models_dir.mkdir(parents=True, exist_ok=True)
        path = models_dir / f"{source.stem}-no-type-token.yaml"
        path.write_text(json.dumps(model, indent=1), encoding="utf-8")  # JSON is YAML; stable, no extra dumper
        return override(cfg, model=str(path))
    return cfg


def eval_config(base: EvaluateConfig, variant: Variant, checkpoint: Path, data: Path, out: Path) -> EvaluateConfig:
    """``base`` pointed at one run; the video-only arm is evaluated only on what it was trained for (video)."""
    cfg = override(base, checkpoint=str(checkpoint), data=str(data), out=str(out))
    if variant is Variant.VIDEO_ONLY:
        cfg = override(cfg, retrieval=(Modality.VIDEO,), captioning=(Modality.VIDEO,))
    return cfg


# -------------------------------------------------------------------------------------------------------- the run


def _prepare_data(cfg: ModalityExperimentConfig, data_dir: Path, progress: bool) -> dict[str, Any]:
    """Make the corpus and its shards once; a changed synth or preprocess config makes them again."""
    stamp_path = data_dir / "experiment-data.json"
    stamp = {"synth": cfg.synth.model_dump(mode="json", exclude={"out", "workers"}),
             "preprocess": cfg.preprocess.content_hash()}  # fmt: skip
    corpus_dir, shards_dir = data_dir / "synth", data_dir / "preprocessed"
    if stamp_path.is_file():
        recorded = json.loads(stamp_path.read_text(encoding="utf-8"))
        if recorded.get("config") == stamp and (shards_dir / "index.json").is_file():
            return dict(recorded["corpus"])
        shutil.rmtree(data_dir)  # another corpus: nothing of the old one may leak into the new runs
    summary = generate_corpus(override(cfg.synth, out=str(corpus_dir)), progress=progress)
    pre = override(cfg.preprocess, manifest=str(corpus_dir / MANIFEST), out=str(shards_dir))
    preprocess_manifest(corpus_dir / MANIFEST, shards_dir, pre, progress=progress)
    corpus = {"clips": summary.clips, "by_split": summary.by_split, "by_audio_type": summary.by_audio_type}
    stamp_path.write_text(json.dumps({"config": stamp, "corpus": corpus}, indent=1), encoding="utf-8")
    return corpus


def _evaluated(eval_dir: Path, checkpoint: Path) -> dict[str, float] | None:
    """The metrics of an earlier evaluation of exactly this checkpoint, if one is complete."""
    metrics = eval_dir / "metrics.json"
    if not metrics.is_file() or metrics.stat().st_mtime < (checkpoint / "model.safetensors").stat().st_mtime:
        return None
    result = read_metrics(metrics)
    return result.metrics if Path(result.checkpoint).resolve() == checkpoint.resolve() else None


def run_experiment(cfg: ModalityExperimentConfig, progress: bool = True) -> ExperimentResult:
    """Train and evaluate every variant × seed (reusing finished runs), then write results.json, table.md and the
    plot into ``cfg.out``."""
    out = Path(cfg.out)
    corpus = _prepare_data(cfg, out / "data", progress)
    shards = out / "data" / "preprocessed"
    runs: list[RunOutcome] = []
    for seed in cfg.seeds:  # seed-major: an interrupted experiment has every variant for the seeds it finished
        for variant in cfg.variants:
            name = f"{variant.value}/seed-{seed}"
            run_dir, eval_dir = out / "runs" / name, out / "eval" / name
            tc = train_config(cfg.train, variant, seed, out / "models")
            log.info("experiment: training %s", name)
            train(resolve(tc), shards, run_dir, progress=progress)
            found = latest_checkpoint(run_dir / CHECKPOINT_DIR)
            assert found is not None  # train() always writes a last checkpoint
            metrics = _evaluated(eval_dir, found.path)
            if metrics is None:
                log.info("experiment: evaluating %s", name)
                ec = eval_config(cfg.evaluate, variant, found.path, shards, eval_dir)
                metrics = run_evaluation(ec, progress=progress).evaluation.result.metrics
            runs.append(RunOutcome(variant, seed, str(found.path), str(eval_dir), metrics))
    result = ExperimentResult(out, corpus, cfg.seeds, cfg.variants, tuple(runs))
    (out / "results.json").write_text(json.dumps(result.to_json_dict(), indent=1), encoding="utf-8")
    (out / "table.md").write_text(markdown_table(result), encoding="utf-8")
    plot_results(result, out / "modality.png")
    return result


# ------------------------------------------------------------------------------------------------------ reporting


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def paired_differences(result: ExperimentResult, a: Variant, metric_a: str, b: Variant, metric_b: str) -> list[float]:
    """Per seed that has both: ``a``'s ``metric_a`` minus ``b``'s ``metric_b`` (the same run when ``a`` is ``b``)."""
    by_seed = {(r.variant, r.seed): r.metrics for r in result.runs}
    return [
        by_seed[(a, s)][metric_a] - by_seed[(b, s)][metric_b]
        for s in result.seeds
        if metric_a in by_seed.get((a, s), {}) and metric_b in by_seed.get((b, s), {})
    ]


def markdown_table(result: ExperimentResult) -> str:
    """The papers' table: rows are variants, cells mean ± sd over seeds (— where a variant has no such task)."""
    head = ["variant", *(f"t→{_GROUP_NAMES[m]} {k}" for m, k in RETRIEVAL_COLUMNS)]
    head += [f"CIDEr ({_GROUP_NAMES[m]})" for m in CAPTION_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for v in result.variants:
        cells = [_cell(result.values(v, retrieval_key(f"t2{m.value}", k))) for m, k in RETRIEVAL_COLUMNS]
        cells += [_cell(result.values(v, caption_key(m, "CIDEr"))) for m in CAPTION_COLUMNS]
        lines.append(f"| `{v.value}` | " + " | ".join(cells) + " |")
    lines.append("")
    for v in result.variants:
        lines.append(f"- `{v.value}`: {_DESCRIPTIONS[v]}")
    t2v, t2av, cider_av = (
        retrieval_key("t2v", "R@1"),
        retrieval_key("t2av", "R@1"),
        caption_key(Modality.AUDIOVISUAL, "CIDEr"),
    )
    comparisons = (
        ("Audio helps within `full` (text→audio+video R@1 minus text→video R@1)",
         Variant.FULL, t2av, Variant.FULL, t2v),
        ("Audio helps across models (`full` text→audio+video R@1 minus `video_only` text→video R@1, same seed)",
         Variant.FULL, t2av, Variant.VIDEO_ONLY, t2v),
        ("Audio type token, retrieval (`full` minus `no_type_token`, text→audio+video R@1, same seed)",
         Variant.FULL, t2av, Variant.NO_TYPE_TOKEN, t2av),
        ("Audio type token, captioning (`full` minus `no_type_token`, CIDEr from audio+video, same seed)",
         Variant.FULL, cider_av, Variant.NO_TYPE_TOKEN, cider_av),
    )  # fmt: skip
    for label, va, ma, vb, mb in comparisons:
        diffs = paired_differences(result, va, ma, vb, mb)
        if diffs:
            higher = sum(d > 0 for d in diffs)
            lines.append(f"- {label}: {_cell(diffs)} points; higher in {higher} of {len(diffs)} seeds.")
    split = result.corpus.get("by_split", {})
    lines.append(
        f"- Corpus: {result.corpus.get('clips')} synthetic clips ({', '.join(f'{k} {n}' for k, n in split.items())}); "
        f"seeds {', '.join(str(s) for s in result.seeds)}; cells are mean ± sd over seeds, R@K in %, CIDEr ×100."
    )
    return "\n".join(lines) + "\n"


def plot_results(result: ExperimentResult, path: Path) -> Path:
    """Grouped bars: R@1 per text→group task and CIDEr per captioning group, one bar per variant, sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("text→X retrieval R@1 (%)", [retrieval_key(forward(m), "R@1") for m in Modality]),
        ("captioning CIDEr", [caption_key(m, "CIDEr") for m in Modality]),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(result.variants)
    for ax, (title, metrics) in zip(axes, panels, strict=True):
        for i, v in enumerate(result.variants):
            values = [result.values(v, m) for m in metrics]
            means = [statistics.mean(x) if x else 0.0 for x in values]
            sds = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in values]
            xs = [j + (i - (len(result.variants) - 1) / 2) * width for j in range(len(metrics))]
            ax.bar(xs, means, width, yerr=sds, capsize=3, label=v.value)
        ax.set_xticks(range(len(metrics)), [_GROUP_NAMES[m] for m in Modality])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"modality experiment: {len(result.seeds)} seed(s), {result.corpus.get('clips')} synthetic clips")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""``avlops evaluate``: benchmark a checkpoint on a preprocessed dataset, write the report and the blessing verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import load_section, override
from avlops.evaluation.params import EvaluateConfig

__all__ = ["register", "run_evaluate"]

_DESCRIPTION = """\
Evaluate a training checkpoint (--checkpoint: a checkpoints/step-N folder, or a run folder for its newest one) on the
--split clips of an `avlops preprocess` output (--data), as the VALOR / CLIP4VLA papers do:

  retrieval   every caption is a query: text->video (t2v), text->audio (t2a), text->audio+video (t2av), and back
              (v2t, a2t, av2t: a clip's best caption); R@1/5/10, MedR, MeanR; again after dual softmax (+DSL)
  captioning  beam search from video (v), audio (a) and both (av); BLEU-4, METEOR, ROUGE-L, CIDEr (pycocoevalcap,
              x100; needs Java)

Tasks the data cannot support are skipped and listed (an audio-only dataset has no video tasks). Reference captions
come from the manifest that index.json names (--manifest overrides). The blessing gate (evaluate.bless in --params:
default checks relative to chance, thresholds per metric, no regression against --champion) decides whether the model
may be registered; it fails closed: when no check ran the model is not blessed.

Writes into --out: metrics.json, blessing.json, captions.jsonl, examples.json, report.html, report.md, plots/.
"""


def _groups(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="benchmark a checkpoint (retrieval, captioning), report, blessing gate",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 blessed, 1 not blessed, 2 bad usage or config, 3 missing input or data that does not "
        "fit the model (tokenizer, context, frame or fbank shape, no such split, duplicate ids, no Java).",
    )
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder, or a training run folder (its newest one)")
    p.add_argument("--data", type=Path, help="preprocessed folder (index.json + shards)")
    p.add_argument("--out", type=Path, help="output folder for metrics, verdict and report")
    p.add_argument("--params", type=Path, help="params.yaml to read the [evaluate] section from")
    p.add_argument("--manifest", type=Path, help="manifest with the reference captions (default: index.json's)")
    p.add_argument("--split", choices=["train", "val", "test"], help="split to evaluate (default test)")
    p.add_argument(
        "--quarantine",
        type=Path,
        action="append",
        help="a quarantine.jsonl (from `avlops data validate`) whose clips are not evaluated on; repeatable",
    )
    p.add_argument("--baseline", type=Path, help="a baseline model's metrics.json to compare against in the report")
    p.add_argument("--champion", type=Path, help="the current champion's metrics.json for the gate's champion checks")
    groups = ["v", "a", "av"]
    p.add_argument("--retrieval", nargs="*", choices=groups, metavar="GROUP", help="groups to retrieve (v a av)")
    p.add_argument("--captioning", nargs="*", choices=groups, metavar="GROUP", help="groups to caption from")
    p.add_argument("--beam-size", type=int, help="beam search width (1 = greedy; papers: 3)")
    p.add_argument("--max-caption-len", type=int, help="tokens per generated caption, SOT and EOT included")
    p.add_argument("--batch-size", type=int, help="clips per encoder / decoder batch")
    p.add_argument("--no-dsl", action="store_true", help="skip the dual-softmax rows")
    p.add_argument("--truncate-captions", action="store_true", help="cut captions longer than the model's context")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--unsafe-bless-without-checks",
        action="store_true",
        help="UNSAFE: bless the model even when no blessing check ran (by default that is NOT blessed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_evaluate)


def _config(args: argparse.Namespace) -> EvaluateConfig:
    cfg = load_section(args.params, "evaluate", EvaluateConfig)

    def path(value: Path | None) -> str | None:
        return None if value is None else str(value)

    cfg = override(
        cfg,
        checkpoint=path(args.checkpoint),
        data=path(args.data),
        out=path(args.out),
        manifest=path(args.manifest),
        split=args.split,
        quarantine=None if args.quarantine is None else [*cfg.quarantine, *map(str, args.quarantine)],
        baseline=path(args.baseline),
        retrieval=_groups(args.retrieval),
        captioning=_groups(args.captioning),
        beam_size=args.beam_size,
        max_caption_len=args.max_caption_len,
        batch_size=args.batch_size,
        dual_softmax=False if args.no_dsl else None,
        truncate_captions=True if args.truncate_captions else None,
        device=args.device,
    )
    if args.champion is not None:
        cfg = override(cfg, bless=override(cfg.bless, champion=str(args.champion)))
    if args.unsafe_bless_without_checks:
        cfg = override(cfg, bless=override(cfg.bless, unsafe_bless_without_checks=True))
    return cfg


def _headline(metrics: dict[str, float]) -> list[str]:
    from avlops.evaluation.names import CAPTION_METRICS, CAPTION_QUALITY, caption_key, forward, retrieval_key
    from avlops.modality import Modality

    lines = []
    for m in Modality:
        task = forward(m)
        if retrieval_key(task, "R@1") in metrics:
            r = [metrics[retrieval_key(task, k)] for k in ("R@1", "R@5", "R@10")]
            medr = metrics[retrieval_key(task, "MedR")]
            dsl = metrics.get(retrieval_key(task, "R@1", dsl=True))
            extra = f"  (+DSL R@1 {dsl:.1f})" if dsl is not None else ""
            lines.append(f"  {task:<5} R@1/5/10 {r[0]:.1f}/{r[1]:.1f}/{r[2]:.1f}  MedR {medr:g}{extra}")
    for m in Modality:
        if caption_key(m, "CIDEr") in metrics:
            values = "/".join(f"{metrics[caption_key(m, k)]:.1f}" for k in CAPTION_METRICS)
            lines.append(f"  caption from {m.value:<2} B@4/M/R/C {values}")
        if caption_key(m, "empty") in metrics:
            q = {k: metrics[caption_key(m, k)] for k in CAPTION_QUALITY}
            lines.append(
                f"  captions from {m.value:<2} {q['empty']:.0f} % empty, {q['repetitive']:.0f} % repetitive, "
                f"{q['degenerate']:.0f} % degenerate; distinct-1/2 {q['distinct-1']:.0f}/{q['distinct-2']:.0f} %"
                + ("  WARNING: captions that say nothing" if q["degenerate"] > 0 else "")
            )
    return lines


def run_evaluate(args: argparse.Namespace) -> int:
    from avlops.evaluation.captioning import JavaNotFoundError  # torch, matplotlib: imported when the command runs
    from avlops.evaluation.results import MetricsFileError
    from avlops.evaluation.run import run_evaluation
    from avlops.training.checkpoint import CheckpointError
    from avlops.training.data import DataError

    cfg = _config(args)
    try:
        run = run_evaluation(cfg, progress=not args.no_progress)
    except (DataError, JavaNotFoundError, CheckpointError, MetricsFileError) as err:
        print(f"avlops evaluate: {err}", file=sys.stderr)
        return ExitCode.INPUT
    result, verdict = run.evaluation.result, run.verdict
    print(f"evaluated {result.checkpoint} on split {result.split!r} of {result.data} in {result.seconds:.2f} s")
    print("\n".join(_headline(result.metrics)))
    for task, why in result.skipped.items():
        print(f"  skipped {task}: {why}")
    for note in result.notes:
        if note.startswith("dropped "):
            print(f"  {note}")
    if not cfg.quarantine:
        print("  no validation quarantine given (--quarantine or evaluate.quarantine): every preprocessed clip used")
    print(f"{'BLESSED' if verdict.blessed else 'NOT BLESSED'}: " + "; ".join(verdict.reasons))
    print(f"report: {run.files['report_html']}  metrics: {run.files['metrics']}  verdict: {run.files['blessing']}")
    return ExitCode.OK if verdict.blessed else ExitCode.FAILED

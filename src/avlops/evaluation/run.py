"""Evaluate a checkpoint on every task a dataset supports: :func:`evaluate` (in memory) and :func:`run_evaluation`
(files, gate and report: what ``avlops evaluate`` runs).

Tasks, per modality group ``m`` in ``evaluate.retrieval`` / ``evaluate.captioning`` (v, a, av):

* retrieval ``t2m`` (and ``m2t``, and both after dual softmax): the gallery is every clip the group can use — clips
  with video for v and av, clips with audio for a — and every caption of those clips is a query;
* captioning from ``m``: one caption per such clip, beam search, scored against all of the clip's references.

A task the data cannot support is skipped with its reason (an audio-only dataset such as AudioCaps has no v or av
tasks; av without any audio would only repeat v; captioning needs a trained caption decoder). When nothing is left
the run stops with :class:`NothingToEvaluateError`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avlops.config import ConfigError
from avlops.data.exclusions import ExclusionError, describe_dropped, read_exclusions
from avlops.evaluation.blessing import Verdict, bless, write_verdict
from avlops.evaluation.caption_quality import caption_quality
from avlops.evaluation.captioning import decode_tokens, require_java, score_caption_sets
from avlops.evaluation.checkpoint import LoadedModel, load_for_evaluation
from avlops.evaluation.dataset import EvalSet, MismatchError, load_eval_set
from avlops.evaluation.names import (
    backward,
    caption_key,
    caption_task_key,
    forward,
    retrieval_key,
    retrieval_task_key,
)
from avlops.evaluation.params import EvaluateConfig
from avlops.evaluation.results import (
    TOP_K,
    Evaluation,
    EvaluationResult,
    RetrievalExample,
    RetrievalOutcome,
    read_metrics,
    write_metrics,
)
from avlops.evaluation.retrieval import rank_retrieval, recall_metrics, top_k
from avlops.evaluation.scoring import Encoded, dsl_scale, encode, retrieval_task
from avlops.fileio import write_bytes_atomic, write_json_atomic
from avlops.modality import Modality
from avlops.task import generate_captions
from avlops.training.data import DataError

__all__ = [
    "CAPTIONS_NAME",
    "EXAMPLES_NAME",
    "EvaluationRun",
    "NothingToEvaluateError",
    "evaluate",
    "plan",
    "run_evaluation",
]

log = logging.getLogger(__name__)

CAPTIONS_NAME = "captions.jsonl"
EXAMPLES_NAME = "examples.json"


class NothingToEvaluateError(DataError):
    """The split supports none of the requested tasks (e.g. retrieval from audio on clips without sound)."""


def plan(
    data: EvalSet, cfg: EvaluateConfig, loaded: LoadedModel
) -> tuple[list[Modality], list[Modality], dict[str, str]]:
    """The retrieval and captioning groups that can run on ``data``, and why the others cannot (task -> reason)."""
    split = repr(data.split)
    skipped: dict[str, str] = {}

    def why_not(m: Modality) -> str | None:
        if m is Modality.AUDIO and not bool(data.has_audio.any()):
            return f"no clip of split {split} has audio"
        if m is not Modality.AUDIO and not bool(data.has_video.any()):
            return f"no clip of split {split} has video"
        if m is Modality.AUDIOVISUAL and not bool((data.has_video & data.has_audio).any()):
            return f"no clip of split {split} has both video and audio (av would repeat v)"
        return None

    retrieval, captioning = [], []
    for m in cfg.retrieval:
        reason = why_not(m) or (
            f"only 1 clip of split {split} can be retrieved" if len(data.clips_with(m)) < 2 else None
        )
        if reason:
            skipped[retrieval_task_key(forward(m))] = reason
            if cfg.backward:
                skipped[retrieval_task_key(backward(m))] = reason
        else:
            retrieval.append(m)
    for m in cfg.captioning:
        reason = why_not(m)
        if reason is None and loaded.objective.caption is None:
            reason = "the model was trained without a caption objective (objective.caption is null)"
        if reason:
            skipped[caption_task_key(m)] = reason
        else:
            captioning.append(m)
    if not retrieval and not captioning:
        asked = [f"retrieval {m.value}" for m in cfg.retrieval] + [f"captioning {m.value}" for m in cfg.captioning]
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise NothingToEvaluateError(
            f"{data.data_dir}: nothing to evaluate on split {split} (asked for {', '.join(asked) or 'no task'})"
            + (f": {reasons}" if reasons else "")
        )
    return retrieval, captioning, skipped


def _max_len(cfg: EvaluateConfig, loaded: LoadedModel) -> int:
    ctx = loaded.model.cfg.decoder.context_length
    if cfg.max_caption_len is None:
        return min(30, ctx)
    if cfg.max_caption_len > ctx:
        raise MismatchError(f"evaluate.max_caption_len {cfg.max_caption_len} exceeds the model's decoder context {ctx}")
    return cfg.max_caption_len


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included (example queries)."""
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(k, n))})


def _retrieve(
    loaded: LoadedModel, data: EvalSet, enc: Encoded, m: Modality, cfg: EvaluateConfig, progress: bool
) -> RetrievalOutcome:
    """Ranks of one group's retrieval tasks, and example queries with their top results."""
    model, objective = loaded.model, loaded.objective
    task = retrieval_task(model, objective, enc, data, m)
    n_gallery, n_query = len(task.clips), len(task.queries)
    ranks = rank_retrieval(
        task.score,
        task.targets,
        n_gallery,
        backward=cfg.backward,
        dsl_scale=dsl_scale(model, objective) if cfg.dual_softmax else None,
        query_batch=cfg.query_batch,
        gallery_batch=cfg.gallery_batch,
        cache_bytes=cfg.cache_mb << 20,
        progress=progress,
        desc=f"rank {forward(m)}",
    )
    picks = _spread(n_query, cfg.examples)
    top = top_k(task.score, picks, n_gallery, TOP_K, cfg.gallery_batch)  # [n, k] gallery positions
    examples = [
        RetrievalExample(
            caption=int(task.queries[i]),
            clip=int(task.clips[task.targets[i]]),
            rank=int(ranks.forward[i]),
            top=[int(task.clips[g]) for g in row],
        )
        for i, row in zip(picks, top.tolist(), strict=True)
    ]
    return RetrievalOutcome(m, ranks, n_gallery, n_query, examples)


def _caption(loaded: LoadedModel, data: EvalSet, m: Modality, cfg: EvaluateConfig, max_len: int) -> dict[str, str]:
    """One generated caption per clip the group can use (clip id -> text)."""
    device = next(loaded.model.parameters()).device
    generated: dict[str, str] = {}
    for idx, batch in data.batches(data.clips_with(m), cfg.batch_size):
        tokens = generate_captions(
            loaded.model,
            batch.to(device),
            loaded.objective,
            m.group,
            max_len=max_len,
            beam_size=cfg.beam_size,
            length_penalty=cfg.length_penalty,
            min_len=min(cfg.min_caption_len, max_len - 2),
            no_repeat_ngram=cfg.no_repeat_ngram,
        )
        generated.update(zip((data.clip_ids[int(i)] for i in idx), decode_tokens(tokens.cpu()), strict=True))
    return generated


@torch.no_grad()
def evaluate(loaded: LoadedModel, data: EvalSet, cfg: EvaluateConfig, progress: bool = False) -> Evaluation:
    """Run every task ``data`` supports with ``loaded``'s model; nothing is written."""
    t0 = time.perf_counter()
    retrieval_groups, caption_groups, skipped = plan(data, cfg, loaded)
    max_len = _max_len(cfg, loaded) if caption_groups else 0
    if caption_groups:
        require_java()  # before any work: the caption metrics cannot run without it
    metrics: dict[str, float] = {}
    tasks: dict[str, dict[str, int]] = {}

    outcomes: dict[Modality, RetrievalOutcome] = {}
    if retrieval_groups:
        enc = encode(loaded.model, data, cfg.batch_size, progress)
        for m in retrieval_groups:
            o = outcomes[m] = _retrieve(loaded, data, enc, m, cfg, progress)
            for name, r, dsl in (
                (forward(m), o.ranks.forward, False),
                (backward(m), o.ranks.backward, False),
                (forward(m), o.ranks.forward_dsl, True),
                (backward(m), o.ranks.backward_dsl, True),
            ):
                if r is not None:
                    metrics.update({retrieval_key(name, k, dsl): v for k, v in recall_metrics(r).items()})
            tasks[retrieval_task_key(forward(m))] = {"queries": o.queries, "gallery": o.gallery}
            if cfg.backward:
                tasks[retrieval_task_key(backward(m))] = {"queries": o.gallery, "gallery": o.queries}

    captions = {m: _caption(loaded, data, m, cfg, max_len) for m in caption_groups}
    if captions:
        references = dict(zip(data.clip_ids, data.references, strict=True))
        scores = score_caption_sets(references, {m.value: generated for m, generated in captions.items()})
        for m, generated in captions.items():
            metrics.update({caption_key(m, k): v for k, v in scores[m.value].items()})
            metrics.update({caption_key(m, k): v for k, v in caption_quality(generated.values()).items()})
            tasks[caption_task_key(m)] = {"clips": len(generated)}

    notes = [f"device {loaded.device}"]
    if data.dropped:
        notes.append(describe_dropped(data.dropped, f"split {data.split!r}"))
    if data.truncated:
        notes.append(f"{data.truncated} caption(s) cut to the model's {data.tokens.shape[1]} tokens, as training does")
    if caption_groups:
        notes.append(
            f"captions generated with beam size {cfg.beam_size}, {min(cfg.min_caption_len, max_len - 2)} to "
            f"{max_len} tokens, length penalty {cfg.length_penalty:g}, no repeated {cfg.no_repeat_ngram}-grams"
        )
    result = EvaluationResult(
        checkpoint=str(loaded.path),
        step=loaded.step,
        data=str(data.data_dir),
        split=data.split,
        manifest=str(data.manifest),
        metrics=metrics,
        tasks=tasks,
        skipped=skipped,
        notes=notes,
        settings=cfg.model_dump(mode="json"),
        seconds=round(time.perf_counter() - t0, 3),
    )
    return Evaluation(result, data, outcomes, captions)


@dataclass(frozen=True)
class EvaluationRun:
    evaluation: Evaluation
    verdict: Verdict
    out_dir: Path
    files: dict[str, Path]  # "metrics", "blessing", "captions", "examples", "report_html", "report_md"


def _write_outputs(out: Path, ev: Evaluation) -> dict[str, Path]:
    data = ev.data
    rows = []
    for i, clip in enumerate(data.clip_ids):
        generated = {m.value: ev.captions[m][clip] for m in ev.captions if clip in ev.captions[m]}
        if generated:
            rows.append({"clip_id": clip, "generated": generated, "references": data.references[i]})
    captions = out / CAPTIONS_NAME
    write_bytes_atomic(captions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    examples = {
        forward(m): [
            {
                "query": data.caption_text(e.caption),
                "clip_id": data.clip_ids[e.clip],
                "rank": e.rank,
                "top": [data.clip_ids[c] for c in e.top],
            }
            for e in o.examples
        ]
        for m, o in ev.retrieval.items()
    }
    write_json_atomic(out / EXAMPLES_NAME, examples)
    return {"captions": captions, "examples": out / EXAMPLES_NAME}


def _not_asked(cfg: EvaluateConfig) -> dict[str, str]:
    """Tasks the config did not ask for, with the setting that left them out (explains the gate's missing metrics)."""
    out: dict[str, str] = {}
    for m in Modality:
        if m not in cfg.retrieval:
            out[retrieval_task_key(forward(m))] = out[retrieval_task_key(backward(m))] = (
                "not asked for (evaluate.retrieval)"
            )
        elif not cfg.backward:
            out[retrieval_task_key(backward(m))] = "not asked for (evaluate.backward)"
        if cfg.dual_softmax is False:
            for task in (forward(m), backward(m)):
                out[retrieval_task_key(task, dsl=True)] = "not asked for (evaluate.dual_softmax)"
        if m not in cfg.captioning:
            out[caption_task_key(m)] = "not asked for (evaluate.captioning)"
    return out


def run_evaluation(cfg: EvaluateConfig, *, progress: bool = True) -> EvaluationRun:
    """Evaluate ``cfg.checkpoint`` on ``cfg.data`` and write, into ``cfg.out``: ``metrics.json``, ``blessing.json``,
    ``captions.jsonl``, ``examples.json``, ``report.html``, ``report.md`` and ``plots/``."""
    from avlops.evaluation.report import write_report  # matplotlib: only when a report is written

    if cfg.checkpoint is None:
        raise ConfigError("checkpoint: nothing to evaluate; give --checkpoint or set evaluate.checkpoint")
    baseline = read_metrics(cfg.baseline) if cfg.baseline else None
    champion = read_metrics(cfg.bless.champion) if cfg.bless.champion else None
    loaded = load_for_evaluation(cfg.checkpoint, cfg.device)
    try:
        exclude = read_exclusions(cfg.quarantine)
    except ExclusionError as err:
        raise DataError(str(err)) from None
    data = load_eval_set(
        cfg.data,
        loaded.model.cfg,
        split=cfg.split.value,
        manifest=cfg.manifest,
        truncate_captions=cfg.truncate_captions,
        exclude=exclude,
        model_name=str(loaded.path / "model_config.json"),
    )
    ev = evaluate(loaded, data, cfg, progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": write_metrics(out, ev.result), **_write_outputs(out, ev)}
    verdict = bless(
        ev.result.metrics,
        cfg.bless,
        str(loaded.path),
        champion=None if champion is None else champion.metrics,
        champion_file=cfg.bless.champion,
        not_computed={**_not_asked(cfg), **ev.result.skipped},
        tasks=ev.result.tasks,
    )
    files["blessing"] = write_verdict(out, verdict)
    files["report_html"], files["report_md"] = write_report(out, ev, verdict, baseline)
    log.info("evaluation of %s written to %s", loaded.path, out)
    return EvaluationRun(ev, verdict, out, files)

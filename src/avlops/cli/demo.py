"""``avlops demo``: the embedded end-to-end flow on one machine, driven by ``dvc repro``.

Every stage of ``dvc.yaml`` runs (only what changed since the last run), the data is pushed to the DVC remote
configured in ``params.yaml``, and a summary of each stage's report is printed. Then the blessed model is registered
into the Triton model repository (a rerun reuses the version that holds the same weights), served by a local Triton
Inference Server, and queried over gRPC: a text search and a caption of a test clip.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from avlops.cli import ExitCode, describe
from avlops.config import load_section
from avlops.data import versioning
from avlops.data.manifest import read_manifest
from avlops.data.schema import ClipRecord, Split
from avlops.params import ProjectParams

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole embedded flow (dvc repro of every stage, push, summary)",
        description=describe(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="project parameters (default: %(default)s)")
    p.add_argument("--no-push", action="store_true", help="do not push the data to the DVC remote")
    p.add_argument("--force", action="store_true", help="re-run every stage even when nothing changed")
    p.add_argument("--no-serve", action="store_true", help="do not register the model, serve it on Triton and query it")
    p.set_defaults(handler=run_demo)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _first_clip_id(manifest: Path) -> str | None:
    try:
        with manifest.open(encoding="utf-8") as fh:
            return str(json.loads(fh.readline())["clip_id"])
    except (OSError, ValueError, KeyError):
        return None


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def run_demo(args: argparse.Namespace) -> int:
    params = load_section(args.params, None, ProjectParams)  # the whole file, so a typo anywhere is caught first
    root = versioning.find_root(args.params.resolve().parent)

    _section("pipeline: dvc repro")
    start = time.perf_counter()
    try:
        ran = versioning.repro(root, force=args.force)
    except versioning.VersioningError as err:
        print(f"avlops demo: the pipeline stopped: {err}", file=sys.stderr)
        print("the failing stage printed its reasons above; its reports name the bad items", file=sys.stderr)
        return ExitCode.FAILED
    print(
        f"stages run: {', '.join(ran) if ran else 'none (everything up to date)'} "
        f"in {time.perf_counter() - start:.1f} s"
    )

    if not args.no_push:
        _section("versioning: dvc push")
        sent = versioning.push(root, params.versioning)
        print(
            f"pushed {sent} file(s) to remote {params.versioning.remote_name!r} "
            f"({versioning.remote_url(root, params.versioning)})"
        )

    _section("summary")
    code = _print_summary(root, params)
    if code != ExitCode.OK or args.no_serve:
        return code
    _section("serving: register, Triton, gRPC search and caption")
    return _serve_and_query(root, params)


def _print_training(root: Path, params: ProjectParams) -> bool:
    from avlops.training.report import PLOT_NAME, read_run, summary_lines

    if params.train.out is None:
        print("training: no [train] out folder in params.yaml")
        return False
    out = root / params.train.out
    try:
        report = read_run(out)
    except FileNotFoundError as err:
        print(f"training: {err}")
        return False
    print(f"training {params.train.out} ({params.train.model} model):")
    for line in summary_lines(report):
        print(f"  {line}")
    if (out / PLOT_NAME).is_file():
        print(f"  loss curves: {out / PLOT_NAME}")
    return bool(report.result.get("finished"))


def _print_evaluation(root: Path, params: ProjectParams) -> bool:
    out = root / params.evaluate.out
    metrics, verdict = _read_json(out / "metrics.json"), _read_json(out / "blessing.json")
    if metrics is None or verdict is None:
        print(f"evaluation: no metrics.json / blessing.json in {params.evaluate.out}")
        return False
    values: dict[str, float] = metrics.get("metrics", {})
    print(f"evaluation on the {metrics.get('split')} split ({params.evaluate.out}):")
    for task in ("t2v", "t2a", "t2av"):
        r = [values.get(f"retrieval/{task}/R@{k}") for k in (1, 5, 10)]
        if None not in r:
            print(f"  {task:<5} R@1/5/10 {r[0]:.1f}/{r[1]:.1f}/{r[2]:.1f}  MedR {values[f'retrieval/{task}/MedR']:.0f}")
    for group in ("v", "a", "av"):
        c = [values.get(f"captioning/{group}/{m}") for m in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")]
        if None not in c:
            print(
                f"  captions from {group}: BLEU-4 {c[0]:.1f}  METEOR {c[1]:.1f}  ROUGE-L {c[2]:.1f}  CIDEr {c[3]:.1f}"
            )
    blessed = bool(verdict.get("blessed"))
    print(f"  blessing: {'BLESSED' if blessed else 'NOT BLESSED'}")
    for check in verdict.get("checks", []):
        print(f"    {'passed' if check.get('passed') else 'FAILED'}: {check.get('reason')}")
    for reason in verdict.get("reasons", []):
        print(f"    - {reason}")
    print(f"  report: {out / 'report.html'}")
    return blessed


def _test_clip(records: list[ClipRecord], root: Path) -> tuple[str, str, Path] | None:
    """The first test clip with a moving video: (clip id, its first caption, its media file under ``root``)."""
    for rec in records:
        if rec.split is Split.TEST and rec.video and not rec.is_still_image:
            return rec.clip_id, rec.captions[0], root / rec.video
    return None


def _serve_and_query(root: Path, params: ProjectParams) -> int:
    """Register the blessed model (or reuse the version holding these weights), serve it on a local Triton, search
    with a test clip's caption and caption that clip over gRPC."""
    from avlops.registry.deploy import deploy_and_query  # torch, onnxruntime, tritonclient: only when serving
    from avlops.registry.register import RegistrationRefused

    reg = params.registry
    manifest = root / params.synth.out / "manifest.jsonl"
    records = [located.record for located in read_manifest(manifest)[0]] if manifest.is_file() else []
    picked = _test_clip(records, manifest.parent)
    if picked is None or reg.checkpoint is None or reg.eval_dir is None or reg.data is None:
        print("serving: needs [registry] checkpoint, eval_dir and data, and a test clip with a video")
        return ExitCode.FAILED
    clip_id, query, media = picked
    cfg = reg.model_copy(update={"repository": str(root / reg.repository)})
    try:
        report = deploy_and_query(
            root / reg.checkpoint, root / reg.eval_dir, root / reg.data, query, media, cfg=cfg, features=params.features
        )
    except RegistrationRefused as err:
        print(f"serving: registration refused: {err}", file=sys.stderr)
        return ExitCode.FAILED
    aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(report.aliases.items()))
    print(f"registered version {report.version} in {reg.repository} ({aliases}); model card {report.card}")
    print(f"Triton served it at {report.grpc} (start {report.seconds.get('startup', 0):.0f} s); over gRPC:")
    print(f"  search {query!r}  (the words of test clip {clip_id})")
    captions = {r.clip_id: r.captions for r in records}
    for hit in report.hits:
        mark = "  <- the clip it describes" if hit.clip_id == clip_id else ""
        said = captions.get(hit.clip_id, [""])[0]
        print(f"    {hit.rank}. {hit.clip_id}  score {hit.score:.3f}  {said!r}{mark}")
    print(f"  caption {media.name}: {report.caption!r}")
    if report.feast:
        print(f"  clip embeddings published to Feast (view clip_embedding), e.g. {sorted(report.feast)[:1]}")
    return ExitCode.OK


def _print_summary(root: Path, params: ProjectParams) -> int:
    ok = True
    check = _read_json(root / (params.check.report_dir or "") / "summary.json")
    if check is None:
        print("check: no report found")
        ok = False
    else:
        ok &= bool(check.get("passed"))
        print(
            f"dataset {params.synth.out}: {check['kept']} clips kept, {check['quarantined']} quarantined, "
            f"{check['captions']} captions; splits {check['by_split']}; audio types {check['by_audio_type']}"
        )
    index = _read_json(root / params.preprocess.out / "index.json")
    if index is None:
        print("preprocess: no index found")
        ok = False
    else:
        print(
            f"preprocessed {params.preprocess.out}: {index['clips']} clips, {index['captions']} captions in "
            f"{len(index['shards'])} shards, {index['quarantined']} quarantined; config {index['config_hash']}"
        )
    validation = _read_json(root / params.validation.out / "summary.json")
    if validation is None:
        print("validation: no report found")
        ok = False
    else:
        ok &= bool(validation.get("passed"))
        expectations = validation.get("expectations", [])
        met = sum(1 for e in expectations if e.get("success"))
        verdict = "PASSED" if validation["passed"] else "FAILED"
        print(
            f"validation {verdict}: {met}/{len(expectations)} expectations met, "
            f"{validation['quarantined']} clips quarantined"
        )
        print(f"  Data Docs report: {validation['data_docs']}")
    if (root / params.features.repo_dir).is_dir() and check is not None:
        from avlops.features.store import get_online_clip_features  # here: Feast takes seconds to import

        clip_id = _first_clip_id(root / params.synth.out / "manifest.jsonl")
        if clip_id is not None:
            row = get_online_clip_features(str(root / params.features.repo_dir), [clip_id])[clip_id]
            shown = {k: row.get(k) for k in ("split", "audio_type", "duration_s", "frame_count", "loudness_dbfs")}
            print(f"feature store {params.features.repo_dir}: online lookup {clip_id} -> {shown}")
    ok &= _print_training(root, params)
    ok &= _print_evaluation(root, params)
    versions = versioning.path_versions(root, params.synth.out) if (root / "dvc.lock").is_file() else []
    if versions:
        v = versions[-1]
        where = "uncommitted dvc.lock" if v.rev == "workspace" else f"commit {v.rev[:10]}"
        print(f"data version: {v.output} md5 {v.md5}, {v.nfiles} files, {v.size or 0} bytes ({where})")
        if v.rev == "workspace":
            print("record it with: git add dvc.lock && git commit -m 'data: ...'")
    return ExitCode.OK if ok else ExitCode.FAILED

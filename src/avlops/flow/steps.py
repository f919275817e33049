"""One function per pipeline step: what each component in ``components/`` calls.

A step takes the folders of its input artifacts, the folder (or file) of its outputs, and its ``params.yaml`` section
as a plain mapping (the pipeline parameter; paths in it are replaced by the artifacts'), validates the section with
the stage's typed config, runs the stage's library function, and records itself in the run ledger. Gates raise
:class:`StepFailed` or return their verdict; they never pass silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from avlops.config import StrictModel, build
from avlops.flow.dataset import DatasetRef, materialize_dataset, resolve_dataset
from avlops.flow.ledger import Ledger, StepRecord, StepStatus
from avlops.flow.lineage import Lineage, run_key
from avlops.flow.pages import self_contained_html

if TYPE_CHECKING:
    from avlops.data.check import CheckOutcome
    from avlops.rollout.params import DeployConfig

# Each pipeline task is a process of its own that runs one step: a step imports its stage's libraries (media
# decoding, torch, Great Expectations, Feast) itself, so no task pays for another's.

__all__ = [
    "MANIFEST",
    "GateVerdict",
    "StepFailed",
    "catalogue",
    "check",
    "deploy",
    "evaluate",
    "features",
    "fetch_version",
    "gate",
    "headline",
    "materialize",
    "preprocess",
    "publish",
    "register",
    "resolve",
    "train",
    "validate",
]

MANIFEST = "manifest.jsonl"  # a dataset artifact holds the dataset's folder, its manifest at the top


class StepFailed(RuntimeError):
    """A step's gate failed or its input is unusable; the message names the item and the reason."""


@contextmanager
def _step(stage: str, workspace: str, uri: str) -> Iterator[StepRecord]:
    """Run a block as ``stage`` of the run that owns output ``uri``, recorded in ``workspace``'s ledger ("" = none)."""
    run = run_key(uri)
    if not workspace or not run:
        yield StepRecord(stage, StepStatus.STARTED, "")
        return
    with Ledger(workspace, run).step(stage) as record:
        yield record


def _section(model: type[StrictModel], section: dict[str, Any], where: str, **paths: Any) -> Any:
    """``section`` validated as ``model`` with the artifact ``paths`` in place of the file's paths."""
    return build(model, {**section, **paths}, where)


def _manifest(dataset: Path) -> Path:
    manifest = dataset / MANIFEST
    if not manifest.is_file():
        raise StepFailed(f"dataset {dataset}: no {MANIFEST} at its top (the dataset path must be a dataset folder)")
    return manifest


# --- dataset ----------------------------------------------------------------------------------------------------------


def resolve(ref: dict[str, Any], *, workspace: str = "", uri: str = "") -> Lineage:
    """Pin the DVC reference to a commit and a content hash (never cached: a branch moves)."""
    with _step("resolve", workspace, uri) as rec:
        lineage = resolve_dataset(build(DatasetRef, ref, "dataset"))
        rec.notes.append(f"{lineage.repo}:{lineage.path}@{lineage.rev} = commit {lineage.commit[:10]}")
        rec.outputs = {"commit": lineage.commit, "content_hash": lineage.content_hash}
    return lineage.with_run(run_key(uri))


def materialize(
    ref: dict[str, Any], commit: str, content_hash: str, dest: Path, *, workspace: str = "", uri: str = ""
) -> Lineage:
    """Copy the pinned dataset version into ``dest`` and check it holds a manifest."""
    with _step("dataset", workspace, uri) as rec:
        r = build(DatasetRef, ref, "dataset")
        lineage = Lineage(r.repo, r.path, r.rev, commit, content_hash, r.remote_url, run_key(uri))
        materialize_dataset(r, lineage, dest)
        _manifest(dest)
        rec.outputs = {"dataset": str(dest)}
    return lineage


# --- data checks ----------------------------------------------------------------------------------------------------


def check(dataset: Path, report: Path, section: dict[str, Any], *, workspace: str = "", uri: str = "") -> CheckOutcome:
    """The dataset contract and every media file; fails when the bad fraction passes the section's limit."""
    from avlops.data.check import check_dataset
    from avlops.data.params import CheckConfig

    with _step("check", workspace, uri) as rec:
        cfg = _section(CheckConfig, section, "check", manifest=str(_manifest(dataset)), report_dir=str(report))
        outcome = check_dataset(cfg)
        rec.notes.append(f"{outcome.summary['kept']} kept, {outcome.summary['quarantined']} quarantined")
        if not outcome.passed:
            raise StepFailed(f"check failed: {outcome.reason()}")
    return outcome


def preprocess(
    dataset: Path, out: Path, section: dict[str, Any], *, workspace: str = "", uri: str = ""
) -> dict[str, Any]:
    """Frames, fbank slices and tokens into shards; returns the index summary."""
    from avlops.preprocessing.params import PreprocessConfig
    from avlops.preprocessing.run import preprocess_manifest
    from avlops.training.params import fit_preprocess

    with _step("preprocess", workspace, uri) as rec:
        cfg = _section(PreprocessConfig, section, "preprocess", manifest=str(_manifest(dataset)), out=str(out))
        if cfg.model is not None:  # the model fixes the input shapes; the settings given must agree with it
            explicit = {k: v for k, v in section.items() if k not in ("manifest", "out", "workers", "model")}
            cfg = fit_preprocess(cfg, cfg.model, explicit)
            rec.notes.append(f"for model {cfg.model!r}: {cfg.resolution} px, {cfg.num_mel_bins}x{cfg.target_length}")
        summary = preprocess_manifest(Path(cfg.manifest), out, cfg, progress=False)
        if summary.clips == 0:
            raise StepFailed(f"preprocess: no clip of {cfg.manifest} could be preprocessed (see {out})")
        index = json.loads((out / "index.json").read_text(encoding="utf-8"))
        rec.notes.append(f"{index['clips']} clips in {len(index['shards'])} shards, {index['quarantined']} quarantined")
    return {k: index[k] for k in ("clips", "captions", "quarantined", "config_hash")} | {"shards": len(index["shards"])}


def validate(
    dataset: Path, shards: Path, out: Path, page: Path, section: dict[str, Any], *, workspace: str = "", uri: str = ""
) -> dict[str, Any]:
    """Great Expectations suites over the manifest and the statistics; the Data Docs page goes to ``page``.

    The verdict is in the returned summary; :func:`gate` decides on it, so the Data Docs exist even when it fails.
    """
    from avlops.validation.params import ValidateConfig
    from avlops.validation.run import validate_dataset

    with _step("validate", workspace, uri) as rec:
        stats = shards / "stats.parquet"
        cfg = _section(
            ValidateConfig, section, "validation", manifest=str(_manifest(dataset)), stats=str(stats), out=str(out)
        )
        report = validate_dataset(cfg)
        pages = sorted((report.docs_index.parent / "validations").rglob("*.html"))
        page.write_text(self_contained_html(pages or [report.docs_index], title="Data validation"), encoding="utf-8")
        rec.notes.append(f"{'passed' if report.passed else 'FAILED'}: {report.bad}/{report.total} clips bad")
    summary: dict[str, Any] = report.summary()
    return summary


@dataclass(frozen=True)
class GateVerdict:
    name: str
    passed: bool
    reasons: list[str] = field(default_factory=list)


def gate(kind: str, report: Path, *, stop: bool = False, workspace: str = "", uri: str = "") -> GateVerdict:
    """Read a gate's verdict from its report: ``validation`` (``summary.json``) or ``blessing`` (``blessing.json``).

    Recorded in every run, also when the step that judged was reused from the cache. With ``stop``, a failed gate
    raises :class:`StepFailed` (the run stops here); else the verdict is returned for the pipeline to branch on.
    """
    with _step(f"gate-{kind}", workspace, uri) as rec:
        if kind == "validation":
            summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
            bad = f"{summary['quarantined']} of {summary['records']} clips bad"
            reasons = [f"{bad} (limit {summary['max_bad_fraction']:.1%})", *summary["failed_dataset_expectations"]]
            verdict = GateVerdict(kind, bool(summary.get("passed")), reasons)
        elif kind == "blessing":
            from avlops.evaluation.blessing import read_verdict

            v = read_verdict(report)
            failed_checks = [str(c.reason) for c in v.checks if not c.passed]
            verdict = GateVerdict(kind, v.blessed, failed_checks or list(v.reasons))
        else:
            raise StepFailed(f"gate kind {kind!r}: expected validation or blessing")
        rec.gate = {"name": kind, "passed": verdict.passed, "reasons": verdict.reasons}
        if stop and not verdict.passed:
            raise StepFailed(f"the {kind} gate failed: " + "; ".join(verdict.reasons))
    return verdict


def features(
    dataset: Path,
    shards: Path,
    section: dict[str, Any],
    *,
    reports: Sequence[Path] = (),
    workspace: str = "",
    uri: str = "",
) -> dict[str, Any]:
    """Clip metadata and statistics into the Feast store the section names; clips the check and validate
    ``reports`` quarantined are left out."""
    from avlops.data.exclusions import describe_dropped
    from avlops.features.params import FeaturesConfig
    from avlops.features.store import materialize_features

    with _step("features", workspace, uri) as rec:
        cfg = _section(
            FeaturesConfig,
            section,
            "features",
            manifest=str(_manifest(dataset)),
            stats=str(shards / "stats.parquet"),
            quarantine=_quarantines(reports),
        )
        report = materialize_features(cfg)
        rec.notes.append(f"rows {report.rows} into {report.repo_dir}")
        if report.dropped:
            rec.notes.append(describe_dropped(report.dropped, "the feature store"))
    return {"repo_dir": str(report.repo_dir), "rows": report.rows, "dropped": report.dropped}


# --- model ------------------------------------------------------------------------------------------------------------


def _trainjob(section: dict[str, Any], cfg_path: Path, shards: Path, out: Path, run: str) -> None:
    """Train on Kubernetes as a Kubeflow Trainer TrainJob. Its pods see only the shared PVC, so the shards and the
    config go there first and the run folder comes back into ``out`` after."""
    from avlops.training.trainjob import TrainJobSpec, run_trainjob

    mount = Path(str(section.get("mount_path", "/mnt/avlops")))
    work = mount / "runs" / run
    shutil.copytree(shards, work / "shards", dirs_exist_ok=True)
    shutil.copy2(cfg_path, work / "train.yaml")
    name = f"avlops-train-{run}"[:63].lower().rstrip("-")
    spec = build(
        TrainJobSpec,
        {"name": name, **section, "train_args": _train_args(work / "train.yaml", work / "shards", work / "model")},
        "trainjob",
    )
    run_trainjob(spec)
    shutil.copytree(work / "model", out, dirs_exist_ok=True)


def _train_args(cfg_path: Path, shards: Path, out: Path) -> tuple[str, ...]:
    return ("--config", str(cfg_path), "--data", str(shards), "--out", str(out), "--no-progress")


def _quarantines(reports: Sequence[Path]) -> list[str]:
    """The quarantine files of the check and validate reports: their clips are neither trained nor evaluated on."""
    return [str(r / "quarantine.jsonl") for r in reports if (r / "quarantine.jsonl").is_file()]


def train(
    shards: Path,
    out: Path,
    section: dict[str, Any],
    *,
    reports: Sequence[Path] = (),
    launcher: str = "auto",
    procs: int = 1,
    trainjob: dict[str, Any] | None = None,
    workspace: str = "",
    uri: str = "",
) -> dict[str, Any]:
    """Train into ``out`` with ``torchrun`` and ``procs`` processes here, or as a TrainJob on a cluster.

    ``launcher``: ``local``, ``trainjob``, or ``auto`` (a TrainJob when running inside Kubernetes with
    ``trainjob.num_nodes`` > 1, else torchrun in this task).
    """
    from avlops.training.params import TrainConfig, resolve
    from avlops.training.report import plot_loss_curves, read_run
    from avlops.training.trainjob import torchrun_command

    with _step("train", workspace, uri) as rec:
        cfg = _section(TrainConfig, section, "train", data=str(shards), out=str(out), quarantine=_quarantines(reports))
        resolve(cfg)  # the model and objective parse here, so a bad one fails with its own message, not torchrun's
        if launcher == "auto":  # several nodes on Kubernetes: a TrainJob; else torchrun in this task
            multi = int((trainjob or {}).get("num_nodes", 1)) > 1
            launcher = "trainjob" if multi and os.environ.get("KUBERNETES_SERVICE_HOST") else "local"
        out.mkdir(parents=True, exist_ok=True)
        cfg_path = out / "train.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        if launcher == "local":
            cmd = torchrun_command(procs, _train_args(cfg_path, shards, out))
            rec.notes.append(f"torchrun with {procs} process(es)")
            proc = subprocess.run(cmd, check=False, stdout=sys.stdout, stderr=sys.stderr)
            if proc.returncode != 0:
                raise StepFailed(f"training failed: torchrun exited {proc.returncode} (its log is above)")
        elif launcher == "trainjob":
            if not trainjob:
                raise StepFailed("launcher trainjob: the trainjob parameter (image, pvc, nodes, ...) is empty")
            _trainjob(trainjob, cfg_path, shards, out, run_key(uri) or "run")
        else:
            raise StepFailed(f"launcher {launcher!r}: expected auto, local or trainjob")
        report = read_run(out)
        plot_loss_curves(report)
        if not report.result.get("finished"):
            raise StepFailed(f"training stopped at step {report.result.get('step')} before its end")
        rec.notes.append(f"{report.result.get('step')} steps in {report.result.get('seconds', 0):.0f} s")
    return dict(report.result)


def evaluate(
    model: Path,
    shards: Path,
    dataset: Path,
    out: Path,
    section: dict[str, Any],
    *,
    reports: Sequence[Path] = (),
    workspace: str = "",
    uri: str = "",
) -> tuple[dict[str, float], dict[str, Any], Path]:
    """The papers' protocol and the blessing gate; returns (headline metrics, verdict, self-contained report page)."""
    from avlops.evaluation.params import EvaluateConfig
    from avlops.evaluation.run import run_evaluation

    with _step("evaluate", workspace, uri) as rec:
        cfg = _section(
            EvaluateConfig,
            section,
            "evaluate",
            checkpoint=str(model),
            data=str(shards),
            manifest=str(_manifest(dataset)),
            out=str(out),
            quarantine=_quarantines(reports),
        )
        run = run_evaluation(cfg, progress=False)
        rec.notes.append(f"{'BLESSED' if run.verdict.blessed else 'NOT BLESSED'}: " + "; ".join(run.verdict.reasons))
    return run.evaluation.result.metrics, run.verdict.to_json_dict(), run.files["report_html"]


def headline(metrics: dict[str, float]) -> list[str]:
    """The headline metric names present in ``metrics``: R@1/5/10 and MedR per forward retrieval task, then every
    captioning metric per modality group (the figures the pipeline logs one by one)."""
    from avlops.evaluation.names import CAPTION_METRICS, caption_key, forward, retrieval_key
    from avlops.modality import Modality

    names = [retrieval_key(forward(m), k) for m in Modality for k in ("R@1", "R@5", "R@10", "MedR")]
    names += [caption_key(m, k) for m in Modality for k in CAPTION_METRICS]
    return [n for n in names if n in metrics]


def catalogue(
    model: Path, shards: Path, out: Path, *, reports: Sequence[Path] = (), workspace: str = "", uri: str = ""
) -> int:
    """Encode every clip of the training data with the model, less the clips the check and validate ``reports``
    quarantined: the search catalogue. Returns its clip count."""
    from avlops.data.exclusions import describe_dropped, read_exclusions
    from avlops.evaluation.checkpoint import resolve_checkpoint
    from avlops.fileio import sha256_file
    from avlops.serving.bundle import WEIGHTS_NAME, load_model
    from avlops.serving.catalogue import build_catalogue

    with _step("catalogue", workspace, uri) as rec:
        checkpoint = resolve_checkpoint(model)
        cat = build_catalogue(
            load_model(checkpoint),
            shards,
            checkpoint_sha256=sha256_file(checkpoint / WEIGHTS_NAME),
            exclude=read_exclusions(_quarantines(reports)),
        )
        cat.save(out)
        rec.notes.append(f"{len(cat)} clips")
        if cat.dropped:
            rec.notes.append(describe_dropped(cat.dropped, "the catalogue"))
    return len(cat)


def register(
    model: Path,
    evaluation: Path,
    catalogue_file: Path,
    shards: Path,
    section: dict[str, Any],
    lineage: Lineage,
    *,
    workspace: str = "",
    uri: str = "",
) -> tuple[int, bool, dict[str, str]]:
    """Register the blessed model (or reuse the version holding these weights). Returns (version, new, aliases)."""
    from avlops.registry.deploy import register_or_reuse
    from avlops.registry.params import RegisterConfig
    from avlops.registry.store import Registry

    with _step("register", workspace, uri) as rec:
        cfg = _section(RegisterConfig, section, "registry", checkpoint=str(model), eval_dir=str(evaluation))
        version, _, new = register_or_reuse(
            model, evaluation, shards, cfg, catalogue=catalogue_file, lineage=lineage.with_run(run_key(uri)).to_dict()
        )
        aliases = {k: str(v) for k, v in Registry(Path(cfg.repository)).aliases().items()}
        rec.notes.append(f"{'registered' if new else 'reused'} version {version} in {cfg.repository}")
    return version, new, aliases


def publish(catalogue_file: Path, version: int, section: dict[str, Any], *, workspace: str = "", uri: str = "") -> int:
    """Publish a catalogue's clip embeddings, as those of registered ``version``, to the Feast store of the section
    (view ``clip_embedding``)."""
    from avlops.features.params import FeaturesConfig
    from avlops.serving.catalogue import Catalogue, publish_catalogue

    with _step("publish", workspace, uri) as rec:
        cfg = _section(FeaturesConfig, section, "features")
        cat = Catalogue.load(catalogue_file)
        publish_catalogue(cat, version, cfg)
        rec.notes.append(f"{len(cat)} clip embeddings of version {version} into {cfg.repo_dir}")
    return len(cat)


def fetch_version(repository: str, version: int, dest: Path, *, workspace: str = "", uri: str = "") -> dict[str, Any]:
    """A registered version as a checkpoint folder; returns the preprocessing it was trained with."""
    from avlops.registry.checkpoint import export_checkpoint
    from avlops.serving.bundle import ServingBundle
    from avlops.serving.contract import CAPTION_DECODER

    with _step("model", workspace, uri) as rec:
        try:
            export_checkpoint(Path(repository), version, dest)
        except FileNotFoundError as err:
            raise StepFailed(str(err)) from None
        bundle = ServingBundle.read(Path(repository) / "models" / CAPTION_DECODER / str(version))
        rec.notes.append(f"version {version} of {repository}")
    from avlops.flow.arguments import without_none

    preprocess: dict[str, Any] = without_none(bundle.preprocess)  # a pipeline parameter: no nulls
    return preprocess


def deploy(
    repository: str,
    version: int,
    dataset: Path,
    page: Path,
    config: dict[str, Any] | None = None,
    manifests: Path | None = None,
    *,
    workspace: str = "",
    uri: str = "",
) -> dict[str, Any]:
    """The hand-off, as the ``deploy`` section says: ``serve`` serves the version on a local Triton server, searches
    with a test clip's caption and captions the clip over gRPC; ``rollout`` starts a canary rollout of it on the
    local platform (or renders the cluster's update, ``target: kubernetes``) into ``manifests``. The page
    (Markdown) says what happened."""
    from avlops.rollout.params import DeployConfig, DeployMode

    cfg = _section(DeployConfig, config or {}, "deploy")
    if manifests is not None:  # an output artifact must exist, or kfp.local's cache forgets the task (serve: empty)
        manifests.mkdir(parents=True, exist_ok=True)
    if cfg.mode is DeployMode.ROLLOUT:
        return _roll_out(Path(repository), version, dataset, page, cfg, manifests or page.with_name("manifests"),
                         workspace=workspace, uri=uri)  # fmt: skip
    from avlops.registry.deploy import pick_test_clip, serve_and_query

    with _step("deploy", workspace, uri) as rec:
        picked = pick_test_clip(_manifest(dataset))
        if picked is None:
            raise StepFailed(f"dataset {dataset}: no test clip with a video to query the served model with")
        clip_id, query, media, audio_type = picked
        report = serve_and_query(Path(repository), version, picked)
        rec.notes.append(f"served v{version}: search and caption answered")
    lines = [
        f"# Served version {version}",
        "",
        f"Triton at `{report.grpc}` (started in {report.seconds.get('startup', 0):.0f} s), queried over gRPC.",
        "",
        f"**search** `{query}` (the words of test clip `{clip_id}`):",
        "",
        *[
            f"{h.rank}. `{h.clip_id}` score {h.score:.3f}" + (" ← the clip" if h.clip_id == clip_id else "")
            for h in report.hits
        ],
        "",
        f"**caption** of `{media.name}` (audio type `{audio_type}`, from the manifest): {report.caption!r}",
    ]
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "mode": cfg.mode.value,
        "version": version,
        "query": query,
        "clip_id": clip_id,
        "hits": [h.clip_id for h in report.hits],
        "caption": report.caption,
        "startup_s": report.seconds.get("startup", 0.0),
        "rollout_id": "",
        "rollout_phase": "",
    }


def _roll_out(
    repository: Path,
    version: int,
    dataset: Path,
    page: Path,
    cfg: DeployConfig,
    manifests: Path,
    *,
    workspace: str,
    uri: str,
) -> dict[str, Any]:
    """``deploy`` in rollout mode (:mod:`avlops.rollout.handoff`)."""
    from avlops.rollout.handoff import HandOffError, hand_off

    with _step("deploy", workspace, uri) as rec:
        golden = _manifest(dataset).resolve() if cfg.probe else None
        try:
            done = hand_off(repository, version, cfg, golden=golden, manifests=manifests)
        except HandOffError as err:
            raise StepFailed(str(err)) from err
        rec.notes.append(done.note())
    page.write_text(done.markdown(), encoding="utf-8")
    return {"mode": cfg.mode.value, "caption": "", **done.outputs()}


def copy_report(src: Path, dest: Path) -> None:
    """The evaluation report as one self-contained page (plots inlined) for the HTML artifact."""
    dest.write_text(self_contained_html([src], title="Evaluation"), encoding="utf-8")


def clear(path: Path) -> None:
    """Remove a stale output left by an earlier attempt of the same task (a retry)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()

"""Registration: a blessed checkpoint becomes a new version of the registry's Triton model repository.

:func:`register_model` refuses (:class:`RegistrationRefused`, nothing published) a checkpoint whose evaluation verdict
is missing, not blessed or about another checkpoint, whose preprocessing does not fit the model, whose catalogue was
built with other weights, or whose exported graphs disagree with eager PyTorch. Otherwise it stages every model's
version folder (exported ONNX encoders and decoder step, weights, catalogue, ``serving.json``, the thin ``model.py``),
renders and validates the local and GPU configurations, writes the model card, and publishes the version atomically
(:mod:`avlops.registry.store`) under the requested alias; the first version of a registry also becomes champion.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avlops.config import ConfigError
from avlops.evaluation.blessing import Verdict, read_verdict
from avlops.evaluation.checkpoint import LoadedModel, load_for_evaluation, resolve_checkpoint
from avlops.fileio import read_json_object, sha256_file
from avlops.models.vla import VLAModel
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.shards import read_index
from avlops.registry.card import code_revision, data_version
from avlops.registry.params import RegisterConfig
from avlops.registry.store import CHAMPION, Registry, RegistryError, check_alias
from avlops.serving.bundle import CATALOGUE_NAME, DECODER_STEP_NAME, ONNX_NAME, WEIGHTS_NAME, ServingBundle
from avlops.serving.catalogue import Catalogue, CatalogueError
from avlops.serving.contract import (
    CAPTION_DECODER,
    CATALOGUE_SEARCH,
    ModelSpec,
    Runtime,
    Sizes,
    repository_models,
)
from avlops.serving.export import (
    ParityResult,
    check_caption_parity,
    check_encoder_parity,
    export_decoder_step,
    export_encoder,
)
from avlops.serving.model_repository import (
    ALIAS_PARAMETER,
    Target,
    model_py,
    parse_config,
    render_config,
    to_pbtxt,
    validate_repository,
)
from avlops.serving.params import SearchSimilarity, ServingLimits
from avlops.training.params import plain

__all__ = [
    "Registration",
    "RegistrationRefused",
    "check_blessing",
    "register_model",
    "relabel_config",
    "served_sizes",
]


class RegistrationRefused(RuntimeError):
    """The checkpoint may not be registered; ``reasons`` says why. Nothing was published."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("registration refused:\n  " + "\n  ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Registration:
    version: int
    repository: str
    aliases: dict[str, int]
    card: str
    parity: list[dict[str, Any]]
    seconds: float

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def served_sizes(model: VLAModel, pre: PreprocessConfig) -> Sizes:
    """The contract's axes for ``model`` fed by ``pre``; raise :class:`RegistrationRefused` when they do not fit."""
    c = model.cfg
    problems = []
    if pre.resolution != c.vision.image_size:
        problems.append(f"frames are preprocessed at {pre.resolution} px, the model takes {c.vision.image_size}")
    if pre.num_mel_bins != c.audio.mel_bins or pre.target_length != c.audio.target_length:
        problems.append(
            f"fbank slices are {pre.num_mel_bins}x{pre.target_length}, the model takes "
            f"{c.audio.mel_bins}x{c.audio.target_length}"
        )
    frames, slices = pre.n_frames(False), pre.n_audio_slices(False)
    if frames > c.decoder.max_frames or slices > c.decoder.max_audio_slices:
        problems.append(
            f"{frames} frames / {slices} slices exceed the decoder's {c.decoder.max_frames} / "
            f"{c.decoder.max_audio_slices}"
        )
    if problems:
        raise RegistrationRefused(problems)
    return Sizes(
        context=c.text.context_length,
        frames=frames,
        resolution=pre.resolution,
        slices=slices,
        mel_bins=pre.num_mel_bins,
        target_length=pre.target_length,
        embed_dim=c.embed_dim,
        vocab_size=c.text.vocab_size,
    )


def relabel_config(repo_name: str, model: str, text: str, alias: str) -> str:
    """A version's configuration text with its alias parameter set to ``alias`` (for ``Registry.set_alias``)."""
    cfg = parse_config(text, f"{repo_name}/{model}")
    cfg.parameters[ALIAS_PARAMETER].string_value = alias
    return to_pbtxt(cfg)


def _preprocess_config(data_dir: Path | None, fallback: PreprocessConfig | None) -> PreprocessConfig:
    """The preprocessing the model was trained with: the data's ``index.json`` config, else ``fallback``."""
    if data_dir is not None:
        try:
            config = read_index(data_dir).get("config")
        except (FileNotFoundError, ValueError):
            config = None
        if config:
            return PreprocessConfig.model_validate(config)
    if fallback is None:
        raise ConfigError(
            f"cannot tell how the training data was preprocessed ({data_dir or 'no data folder'} has no index.json "
            "config): pass --data DIR or --params params.yaml"
        )
    return fallback


def _names(verdict: Verdict, checkpoint: Path) -> bool:
    """Whether the verdict is about ``checkpoint``: the same folder, or (a verdict written on another machine or
    from another working folder) the same last three path parts, ``<run>/checkpoints/step-N``."""
    named = Path(verdict.checkpoint)
    if named.exists():
        return named.resolve() == checkpoint.resolve()
    n = min(len(named.parts), 3)
    return n > 0 and checkpoint.resolve().parts[-n:] == named.parts[-n:]


def check_blessing(eval_dir: Path, checkpoint: Path) -> tuple[Verdict, dict[str, Any]]:
    """The evaluation's verdict on ``checkpoint`` and its metrics; refuse a missing, unblessed or foreign one."""
    try:
        verdict = read_verdict(eval_dir)
    except (FileNotFoundError, ValueError) as err:
        raise RegistrationRefused([str(err)]) from None
    if not verdict.blessed:
        raise RegistrationRefused(["the evaluation did not bless this checkpoint", *verdict.reasons])
    if not _names(verdict, checkpoint):
        raise RegistrationRefused([f"the verdict in {eval_dir} is about {verdict.checkpoint}, not {checkpoint}"])
    metrics_path = eval_dir / verdict.metrics_file
    metrics = (
        read_json_object(metrics_path, what="metrics file", error=FileNotFoundError) if metrics_path.is_file() else {}
    )
    return verdict, metrics


def _stage_model(
    stage: Path, spec: ModelSpec, version: int, bundle: ServingBundle, model: VLAModel, sizes: Sizes, weights: Path
) -> Path:
    folder = stage / "models" / spec.name / str(version)
    folder.mkdir(parents=True)
    if spec.runtime is Runtime.ENSEMBLE:
        return folder  # Triton wants the (empty) version folder of an ensemble
    (folder / "model.py").write_text(model_py(), encoding="utf-8")
    bundle.write(folder)
    if spec.runtime is Runtime.ONNX:
        export_encoder(model, spec, sizes, folder / ONNX_NAME)
    if spec.name in (CATALOGUE_SEARCH, CAPTION_DECODER):
        shutil.copy2(weights, folder / WEIGHTS_NAME)
    if spec.name == CAPTION_DECODER:
        export_decoder_step(model, sizes, folder / DECODER_STEP_NAME)
    return folder


def register_model(
    checkpoint: Path,
    eval_dir: Path,
    catalogue: Path,
    cfg: RegisterConfig,
    *,
    data_dir: Path | None = None,
    preprocess: PreprocessConfig | None = None,
    alias: str | None = None,
    project_root: Path | None = None,
    lineage: dict[str, Any] | None = None,
) -> Registration:
    """Register ``checkpoint`` (a ``<run>/checkpoints/step-N`` folder, or a run folder: its newest checkpoint) into
    ``cfg.repository``; see the module docstring."""
    t0 = time.perf_counter()
    checkpoint = resolve_checkpoint(checkpoint)
    alias = check_alias(alias or cfg.alias)
    src = _gather(checkpoint, Path(eval_dir), Path(catalogue), cfg, data_dir, preprocess)
    specs = repository_models(src.sizes, cfg.batching)
    registry = Registry(Path(cfg.repository))
    with registry.lock():
        version = registry.next_version()  # past a crashed registration's leftovers: numbers are never reused
        registry.remove_orphans()
        bundle = _bundle(version, src, cfg)
        stage = registry.staging(version)
        try:
            parity = _stage_version(stage, version, specs, bundle, src, cfg)
            configs = _configs(specs, version, cfg.batching.max_queue_delay_us)
            card = _model_card(version, specs, bundle, src, parity, project_root or Path.cwd()) | {"lineage": lineage}
            _write_card(stage / "versions" / str(version), card, Path(eval_dir))
            registry.commit(stage, version, configs)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        first = CHAMPION not in registry.aliases()
        for name in dict.fromkeys([alias, *([CHAMPION] if first else [])]):
            registry.set_alias(name, version, relabel_config)
        aliases = registry.aliases()
    return Registration(
        version=version,
        repository=str(cfg.repository),
        aliases=aliases,
        card=str(registry.cards / str(version) / "card.json"),
        parity=[p.to_json_dict() for p in parity],
        seconds=round(time.perf_counter() - t0, 2),
    )


@dataclass(frozen=True)
class _Sources:
    """Everything a registration is made from, checked: the blessed checkpoint, its run, data and catalogue."""

    checkpoint: Path
    verdict: Verdict
    metrics: dict[str, Any]
    run_config: dict[str, Any]
    data_dir: Path | None
    preprocess: PreprocessConfig
    loaded: LoadedModel  # the model and the objective it was trained with
    sizes: Sizes
    weights: Path
    weights_sha: str
    catalogue: Catalogue
    limits: ServingLimits
    similarity: str


def _gather(
    checkpoint: Path,
    eval_dir: Path,
    catalogue: Path,
    cfg: RegisterConfig,
    data_dir: Path | None,
    preprocess: PreprocessConfig | None,
) -> _Sources:
    """Check the blessing, find the run's data and preprocessing, load the model and the catalogue built with it."""
    verdict, metrics = check_blessing(eval_dir, checkpoint)
    config_path = checkpoint.parent.parent / "config.json"
    run_config: dict[str, Any] = {}
    if config_path.is_file():
        run_config = read_json_object(config_path, what="run config", error=FileNotFoundError)
    if data_dir is None and run_config.get("data"):
        data_dir = Path(run_config["data"])
    pre = _preprocess_config(data_dir, preprocess)
    loaded = load_for_evaluation(checkpoint, device="cpu")
    model, objective = loaded.model, loaded.objective
    weights = checkpoint / WEIGHTS_NAME
    weights_sha = sha256_file(weights)
    limits = cfg.limits.model_copy(
        update={"caption_max_len": min(cfg.limits.caption_max_len, model.cfg.decoder.context_length)}
    )
    similarity = objective.similarity.value if cfg.similarity is SearchSimilarity.MODEL else cfg.similarity.value
    return _Sources(
        checkpoint=checkpoint,
        verdict=verdict,
        metrics=metrics,
        run_config=run_config,
        data_dir=data_dir,
        preprocess=pre,
        loaded=loaded,
        sizes=served_sizes(model, pre),
        weights=weights,
        weights_sha=weights_sha,
        catalogue=_load_catalogue(catalogue, weights, weights_sha),
        limits=limits,
        similarity=similarity,
    )


def _load_catalogue(path: Path, weights: Path, weights_sha: str) -> Catalogue:
    """The catalogue at ``path``, refused unless it was built with exactly these weights."""
    try:
        cat = Catalogue.load(path)
    except CatalogueError as err:
        raise RegistrationRefused([str(err)]) from None
    if cat.meta.get("checkpoint_sha256") != weights_sha:
        raise RegistrationRefused(
            [
                f"the catalogue {path} was built with other weights "
                f"({cat.meta.get('checkpoint_sha256')}), not {weights}: rebuild it"
            ]
        )
    return cat


def _bundle(version: int, src: _Sources, cfg: RegisterConfig) -> ServingBundle:
    """``serving.json`` of the version: what every model of it is served with."""
    return ServingBundle(
        version=version,
        sizes=src.sizes,
        model=src.loaded.model.cfg.to_dict(),
        objective=plain(src.loaded.objective),
        preprocess=src.preprocess.model_dump(mode="json"),
        limits=src.limits.model_dump(mode="json"),
        batching=cfg.batching.model_dump(mode="json"),
        similarity=src.similarity,
    )


def _stage_version(
    stage: Path, version: int, specs: tuple[ModelSpec, ...], bundle: ServingBundle, src: _Sources, cfg: RegisterConfig
) -> list[ParityResult]:
    """Every model's version folder under ``stage`` (and the GPU repository's links to them), refused unless the
    exported graphs agree with eager PyTorch; returns the parity checks."""
    model = src.loaded.model
    folders = {s.name: _stage_model(stage, s, version, bundle, model, src.sizes, src.weights) for s in specs}
    src.catalogue.save(folders[CATALOGUE_SEARCH] / CATALOGUE_NAME)
    parity = _parity(model, specs, src.sizes, folders, src.loaded.objective, src.limits, cfg)
    failed = [f"{p.model}: {p.detail}" for p in parity if not p.passed]
    if failed:
        raise RegistrationRefused(["exported graphs disagree with eager PyTorch", *failed])
    for s in specs:  # the GPU repository shares the version folders
        link = stage / "gpu" / s.name / str(version)
        link.parent.mkdir(parents=True)
        link.symlink_to(Path("..", "..", "models", s.name, str(version)))
    return parity


def _model_card(
    version: int,
    specs: tuple[ModelSpec, ...],
    bundle: ServingBundle,
    src: _Sources,
    parity: list[ParityResult],
    project_root: Path,
) -> dict[str, Any]:
    """The version's model card: where it came from, how it is served, how it was evaluated."""
    data = str(src.data_dir) if src.data_dir else None
    cat = src.catalogue
    return {
        "format": "avlops.model_card",
        "version": version,
        "registered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "checkpoint": {"path": str(src.checkpoint.resolve()), "step": src.loaded.step, "sha256": src.weights_sha},
        "run": {"config": src.run_config.get("train"), "data": data},
        "code": code_revision(project_root),
        "data": data_version(project_root, data),
        "model": src.loaded.model.cfg.to_dict(),
        "objective": bundle.objective,
        "preprocess": bundle.preprocess,
        "serving": {
            "limits": bundle.limits,
            "batching": bundle.batching,
            "search_similarity": src.similarity,
            "sizes": dataclasses.asdict(src.sizes),
            "runtimes": _RUNTIMES,
        },
        "evaluation": {"blessing": src.verdict.to_json_dict(), "metrics": src.metrics},
        "parity": [p.to_json_dict() for p in parity],
        "catalogue": {"clips": len(cat), "splits": sorted(set(cat.splits)), **cat.meta},
        "models": [s.name for s in specs],
        "public_models": [s.name for s in specs if s.public],
    }


def _write_card(card_dir: Path, card: dict[str, Any], eval_dir: Path) -> None:
    """``card.json`` and copies of the evaluation's ``metrics.json`` and ``blessing.json``."""
    card_dir.mkdir(parents=True)
    (card_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    for name in ("metrics.json", "blessing.json"):
        if (eval_dir / name).is_file():
            shutil.copy2(eval_dir / name, card_dir / name)


_RUNTIMES = {
    "encoders": "ONNX (legacy exporter, opset 18) run by onnxruntime in Triton's python backend, 1 thread",
    "caption_decoder": "VLAModel.generate (beam search) with each decoder step in onnxruntime",
    "preprocessing": "avlops.preprocessing in Triton's python backend",
}


def _parity(
    model: VLAModel,
    specs: tuple[ModelSpec, ...],
    sizes: Sizes,
    folders: dict[str, Path],
    objective: Any,
    limits: Any,
    cfg: RegisterConfig,
) -> list[ParityResult]:
    tol = {"atol": cfg.parity_atol, "rtol": cfg.parity_rtol}
    results = [
        check_encoder_parity(model, s, sizes, folders[s.name] / ONNX_NAME, **tol)
        for s in specs
        if s.runtime is Runtime.ONNX
    ]
    step = folders[CAPTION_DECODER] / DECODER_STEP_NAME
    results.append(check_caption_parity(model, step, sizes, objective, limits, **tol))
    return results


def _configs(specs: tuple[ModelSpec, ...], version: int, queue_delay_us: int) -> dict[str, dict[str, str]]:
    """Rendered and validated configuration texts per repository and model (composing models first)."""
    out: dict[str, dict[str, str]] = {}
    for target, repo in ((Target.LOCAL, "models"), (Target.GPU, "gpu")):
        rendered = [render_config(s, version, target, queue_delay_us=queue_delay_us) for s in specs]
        try:
            validate_repository(rendered)
        except ValueError as err:
            raise RegistryError(f"rendered {repo} configuration is invalid: {err}") from err
        out[repo] = {c.name: to_pbtxt(c) for c in rendered}
    return out

"""Config section of the training stage (``train`` in ``params.yaml``, or a whole ``configs/train/*.yaml`` file).

Light on purpose (no torch import), like every section model: ``model`` names a ``configs/model/*.yaml`` file (or is
a path to one) and ``objective`` holds :class:`avlops.losses.ObjectiveConfig`'s fields; both are turned into their
typed dataclasses by :func:`resolve`, which the CLI calls before anything runs, so a bad key is reported up front.
Defaults follow VALOR's pretraining (papers.md §1.8): AdamW betas (0.9, 0.98), weight decay 0.01 off bias / LayerNorm
/ embeddings, grad-norm clip 5.0, 10 % linear warmup then linear decay, seed 50 in VALOR (0 here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator

from avlops.config import ConfigError, StrictModel, load_yaml
from avlops.data.schema import Split
from avlops.objective import ObjectiveConfig

if TYPE_CHECKING:
    from avlops.models.vla import VLAConfig
    from avlops.preprocessing.params import PreprocessConfig

__all__ = [
    "MODEL_NAMES",
    "Decay",
    "MetricsConfig",
    "OptimizerConfig",
    "Precision",
    "ResolvedTrain",
    "ScheduleConfig",
    "TrainConfig",
    "fit_preprocess",
    "load_model_config",
    "model_config_path",
    "plain",
    "preprocess_for_model",
    "resolve",
]

#: Model configs shipped in ``configs/model``; ``TrainConfig.model`` may also be a path to any such YAML file.
MODEL_NAMES = ("tiny", "small", "base")


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast on CUDA; on CPU the run falls back to fp32 (and says so)


class Decay(StrEnum):
    LINEAR = "linear"  # VALOR
    COSINE = "cosine"
    CONSTANT = "constant"


class OptimizerConfig(StrictModel):
    """AdamW with decoupled weight decay; bias, LayerNorm, embeddings and the logit scale are not decayed."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate of the parameters trained from scratch")
    pretrained_lr: float | None = Field(
        None,
        gt=0,
        description="peak lr of the text, vision and audio towers when `pretrained` weights are loaded "
        "(VALOR's clip_lr); None = lr",
    )
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float | None = Field(5.0, gt=0, description="max global grad norm; None = no clipping")

    @model_validator(mode="after")
    def _betas(self) -> OptimizerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must be in [0, 1)")
        return self


class ScheduleConfig(StrictModel):
    """Linear warmup from 0 to the peak lr, then decay to ``min_lr_ratio`` × peak at the last step."""

    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of the total steps spent warming up")
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_ratio")
    decay: Decay = Decay.LINEAR
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class MetricsConfig(StrictModel):
    """JSON-lines log in the output folder, Prometheus gauges, optionally pushed to a Pushgateway."""

    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl lines (and progress-bar updates)")
    pushgateway: str | None = Field(None, description="Pushgateway address, e.g. http://pushgateway:9091")
    push_every: int = Field(50, ge=1, description="steps between pushes")
    job: str = "avlops-train"


def _objective(value: Any) -> ObjectiveConfig:
    """``objective:`` as written in YAML (a mapping) -> the typed config; unknown keys and bad values name the key."""
    return value if isinstance(value, ObjectiveConfig) else ObjectiveConfig.from_dict(value)


#: The objective as a config field: parsed strictly when the config loads, recorded as plain JSON values.
Objective = Annotated[
    ObjectiveConfig, BeforeValidator(_objective), PlainSerializer(lambda o: plain(o), return_type=dict[str, Any])
]


class TrainConfig(StrictModel):
    """One training run: model, objective, optimiser, schedule, batch, length and checkpointing."""

    model: str = Field("tiny", description="a configs/model name (tiny, small, base) or a path to a model YAML")
    pretrained: str | None = Field(None, description="CLIP weights (safetensors or .pt) loaded before step 0")
    objective: Objective = Field(
        default_factory=ObjectiveConfig, description="avlops.objective.ObjectiveConfig fields; {} = VALOR's defaults"
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    data: str | None = Field(None, description="`avlops preprocess` output folder; the --data flag overrides it")
    out: str | None = Field(None, description="run folder (checkpoints, metrics); the --out flag overrides it")
    split: Split = Field(Split.TRAIN, description="shards of this split are trained on")
    quarantine: list[str] = Field(
        default_factory=list,
        description="quarantine.jsonl files (`avlops data validate`, `data check`) whose clips are not trained on",
    )
    batch_size: int = Field(32, ge=2, description="global batch: split evenly over the data-parallel ranks")
    steps: int | None = Field(None, ge=1, description="optimizer steps; a run needs one of steps and epochs")
    epochs: float | None = Field(None, gt=0, description="passes over the split (partial last batches dropped)")
    seed: int = 0

    precision: Precision = Precision.FP32
    grad_checkpointing: bool = Field(False, description="recompute transformer blocks in backward (GPU only)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank; 0 = load in the loop")
    verify_checksums: bool = Field(False, description="sha256 every shard against index.json before training")

    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints (one is always written last)")
    keep_last: int = Field(3, ge=1, description="checkpoints kept; older ones are deleted after a good save")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set one of steps and epochs, not both")
        return self


def model_config_path(model: str, search: tuple[Path, ...] = ()) -> Path:
    """The YAML file for ``model``: an existing path, else ``configs/model/<name>.yaml`` under the working directory,
    ``search`` or the source checkout."""
    path = Path(model)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"model: config file {path} not found")
        return path
    roots = (Path.cwd(), *search, Path(__file__).resolve().parents[3])  # the last one: src/avlops/training -> repo
    for root in roots:
        candidate = root / "configs" / "model" / f"{model}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"model: {model!r} is neither a model YAML file nor one of {', '.join(MODEL_NAMES)}")


def load_model_config(model: str, search: tuple[Path, ...] = ()) -> VLAConfig:
    """The :class:`VLAConfig` of a model name or YAML path (a checkpoint's ``model_config.json`` works too)."""
    from avlops.models.vla import VLAConfig

    path = model_config_path(model, search)
    try:
        return VLAConfig.from_dict(load_yaml(path))
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from err


def preprocess_for_model(model: VLAConfig) -> dict[str, int]:
    """The preprocessing settings a model's inputs fix: frame side, fbank bins and frames, sample rate, caption
    context. ``avlops preprocess --model NAME`` uses them, so the model config is their one source of truth."""
    return {
        "resolution": model.vision.image_size,
        "num_mel_bins": model.audio.mel_bins,
        "target_length": model.audio.target_length,
        "sample_rate": model.audio.sample_rate,
        "context_length": min(model.text.context_length, model.decoder.context_length),
    }


def fit_preprocess(cfg: PreprocessConfig, model: str, explicit: dict[str, Any] | None = None) -> PreprocessConfig:
    """``cfg`` with the settings ``model`` fixes (:func:`preprocess_for_model`) and ``model`` recorded.

    ``explicit`` are values the user set (params file keys, flags): one that differs from what the model needs is
    refused with a :class:`ConfigError` naming it, as are more frames or slices than the decoder holds.
    """
    vla = load_model_config(model)
    derived = preprocess_for_model(vla)
    clash = [
        f"{k} {v} (model {model!r} needs {derived[k]})"
        for k, v in (explicit or {}).items()
        if k in derived and v != derived[k]
    ]
    if clash:
        raise ConfigError(
            "preprocessing settings that do not fit the model: " + "; ".join(clash) + f". Drop them: "
            f"`avlops preprocess --model {model}` takes them from the model config"
        )
    fitted = cfg.model_copy(update={**derived, "model": model})
    d = vla.decoder
    too_many = [
        f"{name} {n} (the decoder holds {limit})"
        for name, n, limit in (
            ("frames", max(fitted.n_frames(True), fitted.n_frames(False)), d.max_frames),
            ("audio_slices", max(fitted.n_audio_slices(True), fitted.n_audio_slices(False)), d.max_audio_slices),
        )
        if n > limit
    ]
    if too_many:
        raise ConfigError(f"model {model!r}: " + "; ".join(too_many) + ": lower --frames / --audio-slices")
    return fitted


@dataclass(frozen=True)
class ResolvedTrain:
    """A :class:`TrainConfig` with its model and objective parsed into the library's typed dataclasses."""

    cfg: TrainConfig
    model: VLAConfig
    objective: ObjectiveConfig

    def compat(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it (flattened, JSON values).

        Everything that changes the parameters' meaning, the optimizer's groups or the sample order: the model, the
        objective, the optimiser, the global batch, the seed, the split and whether CLIP weights started the towers.
        Length, schedule, checkpointing, metrics, precision, workers and the world size may change between a run and
        its resumption.
        """
        c = self.cfg
        data = {
            "model": self.model.to_dict(),
            "objective": plain(self.objective),
            "optimizer": c.optimizer.model_dump(mode="json"),
            "batch_size": c.batch_size,
            "seed": c.seed,
            "split": c.split,
            "pretrained": c.pretrained is not None,  # decides the parameter groups; the file itself may move
        }
        return _flatten(json.loads(json.dumps(data)))

    def compat_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.compat(), sort_keys=True).encode()).hexdigest()[:16]


def resolve(cfg: TrainConfig, search: tuple[Path, ...] = ()) -> ResolvedTrain:
    """Load the model YAML and parse the objective; a bad value (or no run length) raises :class:`ConfigError`
    naming the key."""
    if cfg.steps is None and cfg.epochs is None:
        raise ConfigError("steps, epochs: a run needs one of them (how long to train)")
    model = load_model_config(cfg.model, search)
    return ResolvedTrain(cfg, model, cfg.objective)


def plain(obj: Any) -> Any:
    """A dataclass / enum / tuple tree as plain JSON values (how configs are recorded next to checkpoints)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}

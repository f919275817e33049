"""``config.pbtxt`` files rendered from the contract, for the local CPU server and for a GPU production server, each
built as Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``) and parsed back strictly.

Local (what ``avlops serve`` runs): every model but the ensembles runs in Triton's python backend, KIND_CPU; the
encoders there run their ``model.onnx`` with onnxruntime. GPU (rendered and validated, not run here): the encoders go
to the native onnxruntime backend on KIND_GPU with TensorRT as execution accelerator; the python handlers
(preprocessing, pooling, catalogue search, caption decoding with its onnxruntime step) keep CPU instances there too:
they hold no device code, and the encoders are where the FLOPs are.

A repository serves one registered version per model configuration: ``version_policy`` names it and every ensemble
step pins it, so an ensemble can never mix the encoders of two versions. ``configs/<alias>.pbtxt`` and
``configs/v<N>.pbtxt`` are the per-alias and per-version configurations (Triton's ``--model-config-name``),
``config.pbtxt`` the champion's. :func:`validate_repository` checks what the protobuf cannot: every ensemble step
names a model of the repository with tensors that exist, agree in dtype and shape, and are produced before use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from importlib import resources

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from avlops.serving.contract import ModelSpec, Runtime, TensorSpec

__all__ = [
    "HANDLER_PARAMETER",
    "ConfigError",
    "Target",
    "model_py",
    "parse_config",
    "render_config",
    "to_pbtxt",
    "validate_repository",
]

HANDLER_PARAMETER = "avlops.handler"  # which avlops.serving handler a python model runs
VERSION_PARAMETER = "avlops.version"
ALIAS_PARAMETER = "avlops.alias"


class ConfigError(ValueError):
    """A rendered configuration Triton would refuse, or an ensemble wired wrongly."""


class Target(Enum):
    LOCAL = "local"  # this machine: python backend everywhere, CPU
    GPU = "gpu"  # a production server with GPUs and Triton's onnxruntime/TensorRT backends


def model_py() -> str:
    """The thin ``model.py`` every python-backend version folder holds (``serving/triton/model.py``: one copy for
    all models)."""
    return resources.files("serving").joinpath("triton/model.py").read_text(encoding="utf-8")


def _tensor(message: pb.ModelInput | pb.ModelOutput, spec: TensorSpec) -> None:
    message.name = spec.name
    message.data_type = pb.DataType.Value(spec.dtype.config_name)
    message.dims.extend(spec.dims)
    if spec.reshape is not None:
        message.reshape.shape.extend(spec.reshape)
    if spec.ragged and isinstance(message, pb.ModelInput):
        message.allow_ragged_batch = True
    if spec.optional and isinstance(message, pb.ModelInput):
        message.optional = True


def _instances(cfg: pb.ModelConfig, kind: str, count: int) -> None:
    group = cfg.instance_group.add()
    group.kind = pb.ModelInstanceGroup.Kind.Value(kind)
    group.count = count


def render_config(
    spec: ModelSpec, version: int, target: Target = Target.LOCAL, alias: str | None = None, queue_delay_us: int = 0
) -> pb.ModelConfig:
    """The configuration of ``spec`` serving registry ``version`` on ``target``."""
    cfg = pb.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    for s in spec.inputs:
        _tensor(cfg.input.add(), s)
    for s in spec.outputs:
        _tensor(cfg.output.add(), s)
    cfg.version_policy.specific.versions.append(version)
    cfg.parameters[VERSION_PARAMETER].string_value = str(version)
    if alias is not None:
        cfg.parameters[ALIAS_PARAMETER].string_value = alias
    if spec.runtime is Runtime.ENSEMBLE:
        cfg.platform = "ensemble"
        for step in spec.steps:
            s = cfg.ensemble_scheduling.step.add(model_name=step.model, model_version=version)
            s.input_map.update(dict(step.inputs))
            s.output_map.update(dict(step.outputs))
        return cfg
    if spec.dynamic_batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    if target is Target.GPU and spec.runtime is Runtime.ONNX:
        cfg.backend = "onnxruntime"
        cfg.default_model_filename = "model.onnx"
        _instances(cfg, "KIND_GPU", 1)
        cfg.dynamic_batching.max_queue_delay_microseconds = max(queue_delay_us, 100)  # GPUs gain from fuller batches
        accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accel.parameters["precision_mode"] = "FP16"
        accel.parameters["max_workspace_size_bytes"] = str(1 << 30)
        return cfg
    cfg.backend = "python"  # the handlers run on CPU on both targets (see the module docstring)
    if spec.handler is None:
        raise ConfigError(f"{spec.name}: a python-backend model needs a handler kind")
    cfg.parameters[HANDLER_PARAMETER].string_value = spec.handler.value
    _instances(cfg, "KIND_CPU", spec.instances)
    return cfg


def to_pbtxt(cfg: pb.ModelConfig) -> str:
    text: str = text_format.MessageToString(cfg)
    return text


def parse_config(text: str, where: str = "config.pbtxt") -> pb.ModelConfig:
    """Parse ``text`` strictly into Triton's ``ModelConfig`` (unknown fields and bad values are errors)."""
    cfg = pb.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as err:
        raise ConfigError(f"{where}: not a valid Triton ModelConfig: {err}") from err
    return cfg


def _io(cfg: pb.ModelConfig) -> tuple[dict[str, pb.ModelInput], dict[str, pb.ModelOutput]]:
    return {t.name: t for t in cfg.input}, {t.name: t for t in cfg.output}


def _signature(t: pb.ModelInput | pb.ModelOutput) -> tuple[int, tuple[int, ...]]:
    return t.data_type, tuple(t.dims)


def _check_model(cfg: pb.ModelConfig) -> list[str]:
    problems = []
    if not cfg.name:
        problems.append("a model has no name")
    if cfg.platform != "ensemble" and not cfg.backend and not cfg.platform:
        problems.append(f"{cfg.name}: no backend or platform")
    if cfg.platform != "ensemble" and not cfg.instance_group:
        problems.append(f"{cfg.name}: no instance_group")
    if cfg.backend == "python" and HANDLER_PARAMETER not in cfg.parameters:
        problems.append(f"{cfg.name}: python model without the {HANDLER_PARAMETER} parameter")
    names = [t.name for t in (*cfg.input, *cfg.output)]
    if len(set(names)) != len(names):
        problems.append(f"{cfg.name}: tensor names repeat")
    for t in (*cfg.input, *cfg.output):
        if any(d == 0 or d < -1 for d in t.dims):
            problems.append(f"{cfg.name}.{t.name}: dims {list(t.dims)} (sizes must be positive or -1)")
    return problems


def _check_ensemble(cfg: pb.ModelConfig, models: Mapping[str, pb.ModelConfig]) -> list[str]:
    problems = []
    inputs, outputs = _io(cfg)
    available = {n: _signature(t) for n, t in inputs.items()}  # ensemble tensor -> (dtype, dims)
    for i, step in enumerate(cfg.ensemble_scheduling.step):
        where = f"{cfg.name} step {i} ({step.model_name})"
        target = models.get(step.model_name)
        if target is None:
            problems.append(f"{where}: no such model in the repository")
            continue
        if cfg.max_batch_size > target.max_batch_size:
            problems.append(f"{where}: ensemble max_batch_size {cfg.max_batch_size} > {target.max_batch_size}")
        t_in, t_out = _io(target)
        for model_input in t_in:
            if model_input not in step.input_map and not t_in[model_input].optional:
                problems.append(f"{where}: input {model_input!r} is not mapped")
        for model_input, tensor in step.input_map.items():
            if model_input not in t_in:
                problems.append(f"{where}: the model has no input {model_input!r}")
            elif tensor not in available:
                problems.append(f"{where}: {tensor!r} is used before any step produces it")
            elif available[tensor] != _signature(t_in[model_input]):
                problems.append(
                    f"{where}: {tensor!r} is {available[tensor]}, input {model_input!r} wants "
                    f"{_signature(t_in[model_input])}"
                )
        for model_output, tensor in step.output_map.items():
            if model_output not in t_out:
                problems.append(f"{where}: the model has no output {model_output!r}")
                continue
            available[tensor] = _signature(t_out[model_output])
    for name, t in outputs.items():
        if name not in available:
            problems.append(f"{cfg.name}: output {name!r} is produced by no step")
        elif available[name] != _signature(t):
            problems.append(f"{cfg.name}: output {name!r} is {available[name]}, declared {_signature(t)}")
    return problems


def validate_repository(configs: Iterable[pb.ModelConfig]) -> None:
    """Raise :class:`ConfigError` listing every problem of a set of configurations that are served together."""
    models: dict[str, pb.ModelConfig] = {}
    problems: list[str] = []
    for cfg in configs:
        cfg = parse_config(to_pbtxt(cfg), cfg.name)  # the round trip Triton does when it reads the file
        if cfg.name in models:
            problems.append(f"{cfg.name}: defined twice")
        models[cfg.name] = cfg
        problems += _check_model(cfg)
    for cfg in models.values():
        if cfg.platform == "ensemble":
            problems += _check_ensemble(cfg, models)
    if problems:
        raise ConfigError("invalid model repository:\n  " + "\n  ".join(problems))

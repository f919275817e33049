"""The contract and the configurations rendered from it: parsed strictly into Triton's ModelConfig, ensembles wired
consistently, local and GPU targets, and a launch command that exposes no model control."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as pb

from avlops.models.export import AudioEncoderExport, TextEncoderExport, VideoEncoderExport
from avlops.serving.contract import (
    AUDIO_ENCODER,
    SEARCH,
    TEXT_ENCODER,
    VIDEO_ENCODER,
    Runtime,
    Sizes,
    decode_texts,
    encode_texts,
    repository_models,
)
from avlops.serving.model_repository import (
    HANDLER_PARAMETER,
    ConfigError,
    Target,
    model_py,
    parse_config,
    render_config,
    to_pbtxt,
    validate_repository,
)
from avlops.serving.params import BatchingConfig
from avlops.serving.server import CLOSED_HEADER, RESTRICTED_APIS, Endpoints, TritonServer

SIZES = Sizes(context=16, frames=2, resolution=32, slices=1, mel_bins=64, target_length=128, embed_dim=32)


def _rendered(target: Target = Target.LOCAL, version: int = 3) -> dict[str, pb.ModelConfig]:
    return {s.name: render_config(s, version, target) for s in repository_models(SIZES)}


def test_encoder_tensor_names_are_the_export_wrappers_names() -> None:
    models = {m.name: m for m in repository_models(SIZES)}
    for name, wrapper in (
        (TEXT_ENCODER, TextEncoderExport),
        (VIDEO_ENCODER, VideoEncoderExport),
        (AUDIO_ENCODER, AudioEncoderExport),
    ):
        assert tuple(s.name for s in models[name].inputs) == wrapper.INPUT_NAMES
        assert tuple(s.name for s in models[name].outputs) == wrapper.OUTPUT_NAMES


def test_texts_travel_as_zero_padded_utf8() -> None:
    texts = ["a dog barks", "", "naïve café ☕"]
    array = encode_texts(texts)
    assert array.dtype == np.uint8 and array.shape == (3, len("naïve café ☕".encode()))
    assert decode_texts(array) == texts
    assert encode_texts([""]).shape == (1, 1)  # never a zero-sized tensor


@pytest.mark.parametrize("target", list(Target))
def test_every_rendered_config_parses_into_triton_model_config_and_validates(target: Target) -> None:
    configs = _rendered(target)
    validate_repository(configs.values())
    for name, cfg in configs.items():
        back = parse_config(to_pbtxt(cfg), name)
        assert back == cfg
        assert list(back.version_policy.specific.versions) == [3]
        assert back.max_batch_size == BatchingConfig().max_batch_size
    search = configs[SEARCH]
    assert search.platform == "ensemble"
    assert [s.model_name for s in search.ensemble_scheduling.step] == [
        "text_preprocess",
        "text_encoder",
        "catalogue_search",
    ]
    assert all(s.model_version == 3 for s in search.ensemble_scheduling.step)  # never mixes versions


def test_local_and_gpu_targets_differ_where_they_should() -> None:
    local, gpu = _rendered(Target.LOCAL), _rendered(Target.GPU)
    assert local[TEXT_ENCODER].backend == "python"
    assert local[TEXT_ENCODER].parameters[HANDLER_PARAMETER].string_value == "onnx_encoder"
    assert local[TEXT_ENCODER].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert gpu[TEXT_ENCODER].backend == "onnxruntime"
    assert gpu[TEXT_ENCODER].default_model_filename == "model.onnx"
    assert gpu[TEXT_ENCODER].instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    accel = gpu[TEXT_ENCODER].optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt"
    for name in ("text_preprocess", "clip_preprocess", "catalogue_search", "caption_decoder"):
        assert gpu[name].backend == "python" and gpu[name].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_scalar_inputs_are_reshaped_for_native_backends_and_ragged_inputs_flagged() -> None:
    audio = _rendered(Target.GPU)[AUDIO_ENCODER]
    type_weight = next(i for i in audio.input if i.name == "type_weight")
    assert list(type_weight.dims) == [1] and list(type_weight.reshape.shape) == []
    text = next(i for i in _rendered()["text_preprocess"].input if i.name == "text")
    assert text.allow_ragged_batch and list(text.dims) == [-1]


def test_strict_parsing_refuses_what_triton_would() -> None:
    with pytest.raises(ConfigError, match="not a valid Triton ModelConfig"):
        parse_config('name: "x"\nmax_batch_size: 4\nno_such_field: 1\n')
    with pytest.raises(ConfigError, match="not a valid Triton ModelConfig"):
        parse_config('name: "x"\ninput { name: "a" data_type: TYPE_NOPE dims: 1 }\n')


def test_validation_finds_broken_ensembles() -> None:
    configs = _rendered()
    broken = configs[SEARCH]
    del broken.ensemble_scheduling.step[1]  # the text encoder: its outputs are never produced
    with pytest.raises(ConfigError, match="used before any step produces it"):
        validate_repository(configs.values())

    configs = _rendered()
    configs[SEARCH].ensemble_scheduling.step[2].model_name = "no_such_model"
    with pytest.raises(ConfigError, match="no such model"):
        validate_repository(configs.values())

    configs = _rendered()
    tokens = configs[TEXT_ENCODER].input[0]
    tokens.data_type = pb.TYPE_INT32  # the preprocessing produces INT64
    with pytest.raises(ConfigError, match="wants"):
        validate_repository(configs.values())

    configs = _rendered()
    configs["caption_decoder"].ClearField("instance_group")
    configs["clip_pool"].output[0].dims[0] = 0
    with pytest.raises(ConfigError) as err:
        validate_repository(configs.values())
    assert "no instance_group" in str(err.value) and "sizes must be positive" in str(err.value)


def test_contract_changes_flow_into_every_config() -> None:
    bigger = replace(SIZES, embed_dim=64)
    configs = {s.name: render_config(s, 1) for s in repository_models(bigger, BatchingConfig(max_batch_size=4))}
    validate_repository(configs.values())
    assert list(next(o for o in configs[TEXT_ENCODER].output if o.name == "text_embed").dims) == [64]
    assert all(c.max_batch_size == 4 for c in configs.values())
    runtimes = {s.runtime for s in repository_models(bigger)}
    assert runtimes == {Runtime.PYTHON, Runtime.ONNX, Runtime.ENSEMBLE}


def test_model_py_is_a_thin_adapter() -> None:
    text = model_py()
    assert "from avlops.serving.backend import TritonPythonModel" in text
    assert len([line for line in text.splitlines() if line.strip()]) < 10


def test_launch_binds_localhost_and_exposes_no_model_control(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, config_name="champion")
    cmd = server.command(Endpoints("127.0.0.1", 1, 2, 3), tmp_path / "backends")
    assert "--model-control-mode=none" in cmd and not any("explicit" in c for c in cmd)
    for flag in ("--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1"):
        assert flag in cmd
    restricted = [c for c in cmd if c.startswith(("--grpc-restricted-protocol=", "--http-restricted-api="))]
    # closed, not keyed: a header no client can send (Triton 2.51 would take a key only on its command line)
    assert len(restricted) == 2 and all(c.endswith(f"{RESTRICTED_APIS}:{CLOSED_HEADER}=\n") for c in restricted)
    assert any(c.startswith(f"--backend-config=python,shm-region-prefix-name={server.shm_prefix}") for c in cmd)
    assert "--model-config-name=champion" in cmd
    polling = TritonServer(tmp_path, poll_seconds=5).command(Endpoints("127.0.0.1", 1, 2, 3), tmp_path)
    assert "--model-control-mode=poll" in polling and "--repository-poll-secs=5" in polling


def test_one_clip_preprocess_model_takes_either_input_set() -> None:
    """Encoded and decoded clips share one python model (one torch process): its inputs other than audio_type are
    optional, and each ensemble maps only its own."""
    configs = _rendered(Target.LOCAL)
    clip = configs["clip_preprocess"]
    assert {i.name: i.optional for i in clip.input} == {
        "media": True,
        "raw_frames": True,
        "waveform": True,
        "sample_rate": True,
        "audio_type": False,
    }
    first = {name: configs[name].ensemble_scheduling.step[0] for name in ("embed_clip", "caption", "embed_clip_arrays")}
    assert all(step.model_name == "clip_preprocess" for step in first.values())
    assert set(first["embed_clip"].input_map) == set(first["caption"].input_map) == {"media", "audio_type"}
    assert set(first["embed_clip_arrays"].input_map) == {"raw_frames", "waveform", "sample_rate", "audio_type"}
    assert "media_preprocess" not in configs and "array_preprocess" not in configs

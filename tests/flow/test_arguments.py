"""Pipeline parameters are params.yaml's sections; bad ones are refused before anything runs, parameter named."""

from __future__ import annotations

from pathlib import Path

import pytest

from avlops.config import ConfigError, load_section
from avlops.flow.arguments import pipeline_defaults, section_arguments, validate_arguments
from avlops.params import ProjectParams

REPO = Path(__file__).resolve().parents[2]


def test_the_project_params_make_valid_pipeline_defaults() -> None:
    params = load_section(REPO / "params.yaml", None, ProjectParams)
    defaults = pipeline_defaults(params, REPO)
    validate_arguments({k: v for k, v in defaults.items() if k != "repository"})
    assert "out" not in defaults["preprocess"] and "manifest" not in defaults["check"]
    assert Path(defaults["registry"]["repository"]).is_absolute()  # stores outside the run: absolute
    assert defaults["dataset"] == {
        "repo": str(REPO), "path": "data/synth", "rev": "HEAD", "remote_url": str(REPO / ".dvc-storage"),
        "remote_name": "avlops",
    }  # fmt: skip
    assert section_arguments(params)["features"]["repo_dir"] == "artifacts/feast"  # no root: left as written


def test_bad_arguments_name_the_parameter_and_the_key() -> None:
    params = load_section(REPO / "params.yaml", None, ProjectParams)
    defaults = pipeline_defaults(params, REPO)
    bad = {
        **defaults,
        "train": {**defaults["train"], "epochs": "many"},
        "check": {**defaults["check"], "manifest": "x.jsonl"},
        "dataset": {**defaults["dataset"], "rev": " "},
        "trainjob": {"num_nodes": 0},
    }
    with pytest.raises(ConfigError) as err:
        validate_arguments({k: v for k, v in bad.items() if k != "repository"})
    text = str(err.value)
    assert "parameter train: epochs" in text
    assert "parameter check: manifest: set by the pipeline from its artifacts" in text
    assert "parameter dataset: rev: must not be empty" in text
    assert "parameter trainjob: num_nodes" in text


def test_a_null_that_changes_the_config_is_refused_not_dropped() -> None:
    params = load_section(REPO / "params.yaml", None, ProjectParams)
    off = params.model_copy(update={"evaluate": params.evaluate.model_copy(
        update={"bless": params.evaluate.bless.model_copy(update={"defaults": None})})})  # fmt: skip
    with pytest.raises(ConfigError, match=r"\[evaluate\]: a null that is not the default"):
        section_arguments(off)


def test_the_deploy_section_is_a_typed_parameter() -> None:
    params = load_section(REPO / "params.yaml", None, ProjectParams)
    defaults = pipeline_defaults(params, REPO)
    assert defaults["deploy"]["mode"] == "serve"  # the demo serves and queries; a rollout is asked for
    assert defaults["deploy"]["workdir"] == str(REPO / "artifacts" / "rollout")  # outside the run: absolute
    assert defaults["deploy"]["spec"] == str(REPO / "configs" / "rollout" / "default.yaml")
    bad = {
        "mode": ({"mode": "canary"}, "parameter deploy: mode: Input should be 'serve' or 'rollout'"),
        "target": ({"target": "kubernetes"}, "target: kubernetes renders a rollout's update: it needs mode: rollout"),
        "probe": ({"probe": "often"}, "parameter deploy: probe: Input should be a valid boolean"),
        "unknown": ({"wait": True}, "parameter deploy: wait: Extra inputs are not permitted"),
    }
    for value, message in bad.values():
        with pytest.raises(ConfigError) as err:
            validate_arguments({"deploy": {**defaults["deploy"], **value}})
        assert message in str(err.value)
    validate_arguments({"deploy": {**defaults["deploy"], "mode": "rollout", "target": "kubernetes"}})

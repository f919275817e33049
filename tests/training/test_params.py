"""The training config: strict keys and types, resolution of the model and the objective, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from avlops.config import ConfigError, load_section
from avlops.modality import ModalityGroup
from avlops.objective import CaptionStyle
from avlops.training.params import TrainConfig, model_config_path, resolve

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _load(tmp_path: Path, text: str) -> TrainConfig:
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    return load_section(path, None, TrainConfig)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("steps: 4\nbatch_sise: 8\n", "batch_sise"),
        ("steps: 4\nbatch_size: eight\n", "batch_size"),
        ("steps: 4\noptimizer:\n  lrr: 0.1\n", "optimizer.lrr"),
        ("steps: 4\noptimizer:\n  betas: [0.9, 1.5]\n", "optimizer"),
        ("steps: 4\nprecision: fp8\n", "precision"),
        ("steps: 4\nmetrics:\n  log_every: 0\n", "metrics.log_every"),
    ],
)
def test_bad_keys_and_types_are_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _load(tmp_path, text)


def test_one_of_steps_and_epochs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set one of steps and epochs, not both"):
        _load(tmp_path, "steps: 4\nepochs: 1\n")
    cfg = _load(tmp_path, "batch_size: 8\n")  # valid as a section (params.yaml defaults) ...
    assert TrainConfig() == TrainConfig.model_validate({})
    with pytest.raises(ConfigError, match="steps, epochs: a run needs one of them"):
        resolve(cfg)  # ... but not as a run


def test_objective_and_model_are_resolved_strictly(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "steps: 4\nobjective:\n  groups: [tv]\n  caption:\n    style: next_token\n")
    r = resolve(cfg)
    assert r.objective.groups == (ModalityGroup.T_V,) and r.objective.caption.style is CaptionStyle.NEXT_TOKEN
    assert r.model.embed_dim == 32  # configs/model/tiny.yaml
    with pytest.raises(ConfigError, match=r"objective: .*unknown key.*alhpa"):
        resolve(_load(tmp_path, "steps: 4\nobjective:\n  alhpa: 2\n"))
    with pytest.raises(ConfigError, match=r"objective: caption\.mask_prob"):
        resolve(_load(tmp_path, "steps: 4\nobjective:\n  caption:\n    mask_prob: 2.0\n"))
    with pytest.raises(ConfigError, match="objective: groups"):
        resolve(_load(tmp_path, "steps: 4\nobjective:\n  groups: [tva]\n"))
    with pytest.raises(ConfigError, match="model: 'huge'"):
        resolve(_load(tmp_path, "steps: 4\nmodel: huge\n"))
    bad = tmp_path / "model.yaml"
    bad.write_text("embed_dim: 32\ntext:\n  widht: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model.yaml: text: unknown key\(s\) widht"):
        resolve(_load(tmp_path, f"steps: 4\nmodel: {bad}\n"))
    assert model_config_path(str(bad)) == bad


def test_compat_ignores_what_may_change_on_resume(make_cfg) -> None:
    a = resolve(make_cfg())
    assert resolve(make_cfg(steps=9, checkpoint_every=3, num_workers=2, precision="bf16")).compat() == a.compat()
    changed = resolve(make_cfg(batch_size=4)).compat()
    assert {k for k in changed if changed[k] != a.compat()[k]} == {"batch_size"}


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_section(CONFIGS / f"{name}.yaml", None, TrainConfig)
    assert resolve(cfg).model == resolve(TrainConfig(model=name, steps=1)).model

"""A training checkpoint back into a model and its objective: run folders, copied checkpoints, broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from evaluation_data import tiny_model_config, write_checkpoint

from avlops.evaluation.checkpoint import load_for_evaluation, resolve_checkpoint
from avlops.objective import ObjectiveConfig, Similarity
from avlops.training.checkpoint import CheckpointError, IncompatibleCheckpointError


def test_run_folder_checkpoint_folder_and_checkpoints_folder(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "run", tiny_model_config(), ObjectiveConfig(similarity=Similarity.COARSE))
    for given in (ckpt, tmp_path / "run", tmp_path / "run" / "checkpoints"):
        assert resolve_checkpoint(given) == ckpt
    loaded = load_for_evaluation(tmp_path / "run", device="cpu")
    assert loaded.path == ckpt and loaded.step == 3 and not loaded.model.training
    assert loaded.objective.similarity is Similarity.COARSE  # from the run's config.json
    torch.manual_seed(0)
    fresh = type(loaded.model)(tiny_model_config())
    assert torch.equal(fresh.text.token_embedding.weight, loaded.model.text.token_embedding.weight)
    assert loaded.model.decoder.lm_head.weight is loaded.model.decoder.token_embedding.weight  # still tied


def test_a_copied_checkpoint_reads_its_objective_from_meta(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "run", tiny_model_config(), ObjectiveConfig(weighted_tokens=False, alpha=2.0))
    alone = shutil.copytree(ckpt, tmp_path / "elsewhere" / "step-00000003")
    loaded = load_for_evaluation(alone, device="cpu")
    assert loaded.objective == ObjectiveConfig(weighted_tokens=False, alpha=2.0)


def test_missing_and_broken_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints/step-\\* folder"):
        resolve_checkpoint(tmp_path / "empty")
    ckpt = write_checkpoint(tmp_path / "run", tiny_model_config())
    (ckpt / "model_config.json").write_text(json.dumps({**tiny_model_config().to_dict(), "embed_dim": 48}))
    with pytest.raises(IncompatibleCheckpointError, match=r"weights do not fit model_config\.json: size mismatch"):
        load_for_evaluation(ckpt, device="cpu")
    (ckpt / "model_config.json").write_text(json.dumps({"embed_dims": 32}))
    with pytest.raises(CheckpointError, match="unknown key\\(s\\) embed_dims"):
        load_for_evaluation(ckpt, device="cpu")

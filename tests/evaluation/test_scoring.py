"""Evaluation scores text the way the training loss does, and slicing the real score matrix changes no rank."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from evaluation_data import tiny_model_config, write_checkpoint

from avlops.evaluation.checkpoint import LoadedModel, load_for_evaluation
from avlops.evaluation.dataset import EvalSet, load_eval_set
from avlops.evaluation.retrieval import rank_retrieval
from avlops.evaluation.scoring import dsl_scale, encode, retrieval_task
from avlops.modality import Modality
from avlops.objective import ObjectiveConfig, Similarity
from avlops.task import group_features, similarity_matrix, trim_tokens


@pytest.fixture(params=[Similarity.FINE, Similarity.COARSE], ids=["fine", "coarse"])
def setup(request: pytest.FixtureRequest, corpus: Path, tmp_path: Path) -> tuple[LoadedModel, EvalSet]:
    ckpt = write_checkpoint(tmp_path / "run", tiny_model_config(), ObjectiveConfig(similarity=request.param))
    loaded = load_for_evaluation(ckpt, device="cpu")
    return loaded, load_eval_set(corpus, loaded.model.cfg)


@pytest.mark.parametrize("modality", list(Modality))
def test_scores_equal_the_training_similarity(setup: tuple[LoadedModel, EvalSet], modality: Modality) -> None:
    loaded, data = setup
    model, objective = loaded.model, loaded.objective
    task = retrieval_task(model, objective, encode(model, data, batch_size=3), data, modality)
    # the training path: one batch of every clip with its first caption, through the model's forward
    first = data.caption_offsets[:-1]  # [Nc] first caption of each clip
    (_, batch), *_ = list(data.batches(torch.arange(len(data)), batch_size=len(data)))
    batch = trim_tokens(replace(batch, tokens=data.tokens[first]))
    with torch.no_grad():
        out = model(
            batch.tokens,
            batch.frames,
            batch.fbank,
            batch.audio_type_weight,
            batch.has_audio,
            batch.video_mask,
            batch.audio_mask,
        )
        want = similarity_matrix(model, out.text, group_features(model, out, batch, modality.group), objective)
    rows = [int((task.queries == int(c)).nonzero()) for c in first]  # the query row of each first caption
    got = task.score(slice(0, len(task.queries)), slice(0, len(task.clips)))[rows]
    assert got.shape == want.shape == (5, 5)
    assert torch.allclose(got, want, atol=1e-5)


def test_slicing_the_model_scores_changes_no_rank(setup: tuple[LoadedModel, EvalSet]) -> None:
    loaded, data = setup
    task = retrieval_task(loaded.model, loaded.objective, encode(loaded.model, data, 4), data, Modality.AUDIOVISUAL)
    scale = dsl_scale(loaded.model, loaded.objective)
    whole = rank_retrieval(task.score, task.targets, len(task.clips), dsl_scale=scale)
    sliced = rank_retrieval(
        task.score, task.targets, len(task.clips), dsl_scale=scale, query_batch=2, gallery_batch=3, cache_bytes=0
    )
    for name in ("forward", "backward", "forward_dsl", "backward_dsl"):
        assert torch.equal(getattr(whole, name), getattr(sliced, name)), name


def test_audio_gallery_holds_only_clips_with_audio(setup: tuple[LoadedModel, EvalSet]) -> None:
    loaded, data = setup
    data.has_audio[1] = False  # as a silent clip would be
    data.audio_mask[1] = False
    task = retrieval_task(loaded.model, loaded.objective, encode(loaded.model, data, 4), data, Modality.AUDIO)
    assert task.clips.tolist() == [0, 2, 3, 4]
    assert 1 not in data.caption_clip[task.queries].tolist()
    assert task.score(slice(0, 3), slice(0, 4)).shape == (3, 4)
    assert dsl_scale(loaded.model, loaded.objective) == pytest.approx(1 / 0.07)  # untrained: CLIP's initial scale

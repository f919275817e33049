"""Fixtures of the evaluation tests: a tiny real corpus (``avlops data synth`` + ``avlops preprocess`` with the tiny
model's settings) and a tiny model trained on it for a few steps. Both are built once per session and are read-only:
copy them (``evaluation_data.copy_data``) to damage them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluation_data import REPO, TINY_PREPROCESS

from avlops.config import load_yaml
from avlops.data.params import SynthConfig
from avlops.data.synth import generate_corpus
from avlops.preprocessing.run import preprocess_manifest
from avlops.training.loop import train
from avlops.training.params import TrainConfig


@pytest.fixture(autouse=True, scope="session")
def _evaluation_one_thread(one_thread: None) -> None:
    """Single-threaded, as the training tests: the 2 shared cores gain nothing on tiny tensors."""


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic clips preprocessed for the tiny model (5 in the test split); returns the preprocessed folder."""
    root = tmp_path_factory.mktemp("corpus")
    synth = SynthConfig(out=str(root / "synth"), clips=24, seconds=1.0, fps=4, size=32, workers=1, test_fraction=0.3)
    generate_corpus(synth, progress=False)
    preprocess_manifest(root / "synth" / "manifest.jsonl", root / "pre", TINY_PREPROCESS, progress=False)
    return root / "pre"


@pytest.fixture(scope="session")
def trained_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/train/tiny.yaml for a few steps on the corpus's train split; returns the run folder."""
    out = tmp_path_factory.mktemp("run")
    recipe = load_yaml(REPO / "configs" / "train" / "tiny.yaml")
    train(TrainConfig.model_validate({**recipe, "steps": 6, "checkpoint_every": 1000}), corpus, out, progress=False)
    return out

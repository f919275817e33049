"""A tiny real deployment for the serving tests (importable helpers): a synthetic corpus of real mp4 clips, preprocessed
for ``configs/model/tiny.yaml`` (32 px, 2 frames, one 64x128 fbank slice), a tiny model trained on it for a few
seconds, the evaluator's blessing verdict and the catalogue of every clip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avlops.data.params import SynthConfig
from avlops.data.synth import generate_corpus
from avlops.evaluation.blessing import Verdict, write_verdict
from avlops.fileio import sha256_file
from avlops.preprocessing.params import PreprocessConfig, SamplingMode
from avlops.preprocessing.run import preprocess_manifest
from avlops.serving.bundle import load_model
from avlops.serving.catalogue import build_catalogue
from avlops.training.loop import train
from avlops.training.params import TrainConfig, resolve

TRAIN_STEPS = 60


@dataclass(frozen=True)
class Deployment:
    root: Path
    manifest: Path
    data: Path  # the preprocessed folder
    checkpoint: Path
    eval_dir: Path  # blessing.json + metrics.json, blessed
    catalogue: Path
    records: list[dict[str, Any]]  # the manifest's records

    def media(self, clip_id: str) -> Path:
        rec = next(r for r in self.records if r["clip_id"] == clip_id)
        return self.manifest.parent / rec["video"]


def write_verdict_for(eval_dir: Path, checkpoint: Path, blessed: bool = True) -> Path:
    """The evaluator's ``blessing.json`` (through its own writer) and a ``metrics.json`` beside it."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "metrics.json").write_text(json.dumps({"metrics": {"retrieval/t2av/R@1": 50.0}}), encoding="utf-8")
    reasons = ["all 1 check(s) passed"] if blessed else ["retrieval/t2av/R@1 = 50 is below the bound 90 (threshold)"]
    return write_verdict(eval_dir, Verdict(blessed, reasons, [], str(checkpoint)))


def make_deployment(root: Path, clips: int = 12, steps: int = TRAIN_STEPS) -> Deployment:
    synth = SynthConfig(out=str(root / "synth"), clips=clips, seconds=1.0, fps=4, size=32, workers=1)
    generate_corpus(synth, progress=False)
    manifest = root / "synth" / "manifest.jsonl"
    pre = PreprocessConfig(
        manifest=str(manifest),
        out=str(root / "data"),
        resolution=32,
        frames=2,
        eval_frames=2,
        target_length=128,
        sample_rate=16000,
        audio_slices=1,
        workers=1,
        shard_size=4,
        sampling=SamplingMode.EVAL,  # every split sampled like the server samples a request
    )
    preprocess_manifest(manifest, root / "data", pre, progress=False)
    cfg = TrainConfig.model_validate(
        {
            "model": "tiny",
            "batch_size": 8,
            "steps": steps,
            "seed": 0,
            "num_workers": 0,
            "checkpoint_every": 1000,
            "keep_last": 1,
            "optimizer": {"lr": 2e-3},
            "objective": {"groups": ["tv", "ta", "tav"], "similarity": "fine", "caption": {"groups": ["tav"]}},
        }
    )
    result = train(resolve(cfg), root / "data", root / "run", progress=False)
    checkpoint = Path(str(result.checkpoint))
    eval_dir = root / "eval"
    write_verdict_for(eval_dir, checkpoint)
    catalogue = build_catalogue(
        load_model(checkpoint), root / "data", checkpoint_sha256=sha256_file(checkpoint / "model.safetensors")
    ).save(root / "catalogue")
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Deployment(root, manifest, root / "data", checkpoint, eval_dir, catalogue, records)

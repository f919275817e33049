"""Can the vision tower see a synthetic clip's shape? Two diagnostics behind the caption-facts results.

``--checkpoint CKPT:DATA`` (a linear probe): the trained model's frame features (mean over a clip's frames) of the
training clips fit a linear shape classifier; its accuracy on the held-out clips (val + test) says whether the
features carry the shape in a form that generalises, or only identify training clips.

``--tower MODEL:DATA`` (the tower alone): a fresh vision tower of ``MODEL`` (a configs/model name or YAML path) plus a
linear head, trained to classify the shape from the frames of the training clips (batch 16, AdamW 1e-3, ``--steps``)
and scored on the held-out clips: whether that architecture can learn the shape from this much data at all.

    uv run python bench/shape_probe.py --checkpoint artifacts/train/small:data/preprocessed \\
        --tower small:data/preprocessed --tower configs/model/small.yaml:data/preprocessed --steps 600
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from synth_frames import train_and_held_out
from torch import Tensor, nn

from avlops.data.synth import SHAPES
from avlops.evaluation.checkpoint import load_for_evaluation
from avlops.models.vla import VisionEncoder, VLAConfig
from avlops.training.params import load_model_config


def _data(data: str, cfg: VLAConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return train_and_held_out(data, cfg, "shape", SHAPES)


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def linear_probe(checkpoint: str, data: str) -> dict[str, float]:
    loaded = load_for_evaluation(checkpoint, "cpu")
    model = loaded.model.eval()
    x_train, y_train, x_held, y_held = _data(data, model.cfg)
    f_train, f_held = model.encode_video(x_train).mean(1), model.encode_video(x_held).mean(1)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    head = nn.Linear(f_train.shape[1], len(SHAPES))
    opt = torch.optim.Adam(head.parameters(), 1e-2, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(500):
            opt.zero_grad()
            nn.functional.cross_entropy(head((f_train - mean) / std), y_train).backward()  # type: ignore[no-untyped-call]
            opt.step()
    return {
        "train": _accuracy(head((f_train - mean) / std), y_train),
        "held_out": _accuracy(head((f_held - mean) / std), y_held),
        "held_out_clips": len(y_held),
    }


def tower(model: str, data: str, steps: int, seed: int = 0) -> dict[str, float]:
    cfg = load_model_config(model)
    x_train, y_train, x_held, y_held = _data(data, cfg)
    torch.manual_seed(seed)
    encoder = VisionEncoder(cfg.vision, cfg.embed_dim, quick_gelu=True)
    head = nn.Linear(cfg.embed_dim, len(SHAPES))
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], 1e-3, weight_decay=0.01)
    for _ in range(steps):
        pick = torch.randint(len(x_train), (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(head(encoder(x_train[pick]).mean(1)), y_train[pick]).backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        return {
            "train": _accuracy(head(encoder(x_train).mean(1)), y_train),
            "held_out": _accuracy(head(encoder(x_held).mean(1)), y_held),
            "held_out_clips": len(y_held),
            "steps": steps,
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="CHECKPOINT:DATA (a linear probe)")
    parser.add_argument("--tower", action="append", default=[], help="MODEL:DATA (a fresh tower trained on shape)")
    parser.add_argument("--steps", type=int, default=600, help="training steps of --tower (default: %(default)s)")
    args = parser.parse_args(argv)
    for spec in args.checkpoint:
        checkpoint, _, data = spec.rpartition(":")
        print(json.dumps({"probe": checkpoint, "data": data, **linear_probe(checkpoint, data)}), flush=True)
    for spec in args.tower:
        model, _, data = spec.rpartition(":")
        print(json.dumps({"tower": model, "data": data, **tower(model, data, args.steps)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training loop on tiny shards: the loss falls, stop/kill and resume equal an uninterrupted run, and failures
(NaN loss, full disk, incompatible checkpoint) stop it with a clear error and the last good checkpoint intact."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from avlops.cli import main as cli_main
from avlops.config import load_section, override
from avlops.models.vla import VLAModel
from avlops.task import Batch, LossOutput, compute_losses
from avlops.training import checkpoint as ckpt_mod
from avlops.training import loop
from avlops.training.checkpoint import IncompatibleCheckpointError, list_checkpoints
from avlops.training.data import DataError
from avlops.training.loop import NonFiniteLossError, TrainError, enable_grad_checkpointing, train
from avlops.training.params import TrainConfig, resolve


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / f"step-{step:08d}" / "model.safetensors")


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _state(out: Path, step: int) -> dict[str, Any]:
    return dict(torch.load(out / "checkpoints" / f"step-{step:08d}" / "state.pt", weights_only=True))


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


#: the reference run: 6 uninterrupted steps (3 epochs of 2 global batches), a checkpoint every 2
STRAIGHT = """\
model: tiny
batch_size: 8
steps: 6
num_workers: 0
checkpoint_every: 2
keep_last: 5
optimizer: {lr: 1.0e-3}
schedule: {warmup_steps: 1}
metrics: {log_every: 1}
"""


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """The reference run's folder; its config is ``config.yaml`` there."""
    out = tmp_path_factory.mktemp("straight")
    (out / "config.yaml").write_text(STRAIGHT, encoding="utf-8")
    result = train(load_section(out / "config.yaml", None, TrainConfig), tiny_data, out / "run", progress=False)
    assert result.finished and result.step == 6 and result.checkpoint == str(out / "run/checkpoints/step-00000006")
    return out


def test_training_lowers_the_loss_and_writes_its_records(straight: Path) -> None:
    straight = straight / "run"
    log = _log(straight)
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6] and [e["epoch"] for e in log] == [0, 0, 1, 1, 2, 2]
    total = [e["loss"]["total"] for e in log]
    assert total[-1] < total[0] - 0.5 and log[-1]["loss"]["mgc"] < log[0]["loss"]["mgc"]
    assert {"mga/tv", "mga/ta", "mga/tav", "mgc/tav"} <= set(log[0]["loss"])
    assert log[0]["lr"]["new"] == pytest.approx(0.5e-3) and log[1]["lr"]["new"] == pytest.approx(1e-3)
    assert all(e["samples_per_s"] > 0 and 0 <= e["data_wait_share"] < 1 for e in log)
    result = json.loads((straight / "result.json").read_text())
    assert result["finished"] and result["loss"]["total"] == total[-1]
    config = json.loads((straight / "config.json").read_text())
    assert config["model"]["embed_dim"] == 32 and config["total_steps"] == 6
    meta = json.loads((straight / "checkpoints" / "step-00000006" / "meta.json").read_text())
    assert meta["step"] == 6 and meta["compat"]["batch_size"] == 8 and meta["samples"] == 48


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path: Path, tiny_data: Path, straight: Path) -> None:
    cfg = load_section(straight / "config.yaml", None, TrainConfig)
    first = train(cfg, tiny_data, tmp_path, stop_at=3, progress=False)
    assert not first.finished and first.step == 3 and first.checkpoint.endswith("step-00000003")
    # the rest with a loader worker process: the sample order and caption draws do not depend on it
    second = train(override(cfg, num_workers=1), tiny_data, tmp_path, progress=False)
    assert second.start_step == 3 and second.finished
    _assert_same_weights(_weights(tmp_path, 6), _weights(straight / "run", 6))
    a, b = _state(tmp_path, 6), _state(straight / "run", 6)
    assert a["scheduler"] == b["scheduler"] and a["sampler"] == b["sampler"]
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items(), strict=True):
        assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va)
    assert [e["loss"] for e in _log(tmp_path)] == [e["loss"] for e in _log(straight / "run")]
    # a finished run resumed again has nothing to do
    assert train(cfg, tiny_data, tmp_path, progress=False).start_step == 6


def test_killed_process_resumes_to_the_same_weights(tmp_path: Path, tiny_data: Path, straight: Path) -> None:
    """``avlops train`` killed with SIGKILL after its first checkpoint; a new run resumes from whatever is on disk."""
    args = ["train", "--config", str(straight / "config.yaml"), "--data", str(tiny_data), "--out", str(tmp_path)]
    args.append("--no-progress")
    # a separate process, one thread like this one (the reference run's arithmetic), killed with no warning
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "avlops", *args], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "checkpoints") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait()
    done = list_checkpoints(tmp_path / "checkpoints")
    assert done and done[-1].step < 6, "the process was not killed mid-run"
    assert cli_main(args) == 0
    _assert_same_weights(_weights(tmp_path, 6), _weights(straight / "run", 6))


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(
    tmp_path: Path, tiny_data: Path, make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loop.compute_losses
    calls = []

    def poisoned(*args: Any, **kwargs: Any) -> LossOutput:
        out = real(*args, **kwargs)
        calls.append(1)
        return LossOutput(out.total * float("nan"), out.terms) if len(calls) == 3 else out

    monkeypatch.setattr(loop, "compute_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 .*last good checkpoint is .*step-00000002"):
        train(make_cfg(steps=4, checkpoint_every=2), tiny_data, tmp_path, progress=False)
    assert [c.step for c in list_checkpoints(tmp_path / "checkpoints")] == [2]
    good = tmp_path / "checkpoints" / "step-00000002"
    assert all(torch.isfinite(t).all() for t in _weights(tmp_path, 2).values())
    assert [e["step"] for e in _log(tmp_path)] == [1, 2]  # nothing logged for the failed step
    before = _digest(good)
    monkeypatch.setattr(loop, "compute_losses", real)
    assert train(make_cfg(steps=4, checkpoint_every=2), tiny_data, tmp_path, progress=False).start_step == 2
    assert _digest(good) == before


def test_full_disk_stops_with_the_previous_checkpoint_intact(
    tmp_path: Path, tiny_data: Path, make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ckpt_mod._write_state
    seen: dict[str, Any] = {}

    def write(path: Path, state: dict[str, Any]) -> None:
        if state["step"] == 4:
            seen["before"] = _digest(tmp_path / "checkpoints" / "step-00000002")
            path.write_bytes(b"\0" * 100)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, state)

    monkeypatch.setattr(ckpt_mod, "_write_state", write)
    with pytest.raises(TrainError, match=r"step 4 could not be written .*disk is full.*step-00000002 is intact"):
        train(make_cfg(steps=6, checkpoint_every=2), tiny_data, tmp_path, progress=False)
    assert [c.step for c in list_checkpoints(tmp_path / "checkpoints")] == [2]
    assert not list((tmp_path / "checkpoints").glob(".*"))
    assert _digest(tmp_path / "checkpoints" / "step-00000002") == seen["before"]


def test_incompatible_checkpoint_is_refused(tmp_path: Path, tiny_data: Path, make_cfg) -> None:
    train(make_cfg(steps=1), tiny_data, tmp_path, progress=False)
    with pytest.raises(
        IncompatibleCheckpointError, match=r"incompatible config:\n  batch_size: 8 in the checkpoint, 4"
    ):
        train(make_cfg(steps=2, batch_size=4), tiny_data, tmp_path, progress=False)
    with pytest.raises(IncompatibleCheckpointError, match=r"objective\.alpha: 1\.5 in the checkpoint, 2\.0 now"):
        train(make_cfg(steps=2, objective={"alpha": 2.0}), tiny_data, tmp_path, progress=False)
    with pytest.raises(TrainError, match="already holds checkpoint step-00000001"):
        train(make_cfg(steps=2), tiny_data, tmp_path, resume=False, progress=False)


def test_grad_checkpointing_gives_the_same_gradients(make_cfg) -> None:
    """Applied on CUDA only by the loop; the wrapper itself is device independent, so it is checked here."""
    resolved = resolve(make_cfg())
    g = torch.Generator().manual_seed(0)
    tokens = torch.zeros(4, 16, dtype=torch.long)
    tokens[:, :4] = torch.tensor([49406, 320, 1125, 49407])
    batch = Batch(
        tokens=tokens,
        frames=torch.randn(4, 2, 3, 32, 32, generator=g),
        fbank=torch.randn(4, 1, 64, 128, generator=g),
        has_audio=torch.tensor([True, True, False, True]),
        audio_type_weight=torch.full((4,), 0.5),
    )
    grads = []
    for wrap in (False, True):
        torch.manual_seed(0)
        model = VLAModel(resolved.model)
        if wrap:
            assert enable_grad_checkpointing(model) == 2 + 2 + 2 + 2  # text, vision, audio, decoder blocks
        compute_losses(model, batch, resolved.objective, torch.Generator().manual_seed(1)).total.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7, msg=n)


def test_epochs_set_the_length_and_too_big_a_batch_is_refused(tmp_path: Path, tiny_data: Path, make_cfg) -> None:
    result = train(make_cfg(steps=None, epochs=1.5), tiny_data, tmp_path / "a", progress=False)
    assert result.total_steps == 3 and result.finished  # 16 clips, batch 8: 2 steps an epoch
    with pytest.raises(DataError, match="batch_size 32 is larger than the 16 clips"):
        train(make_cfg(batch_size=32), tiny_data, tmp_path / "b", progress=False)


def test_pretrained_towers_start_from_clip_weights_at_their_own_lr(tmp_path: Path, tiny_data: Path, make_cfg) -> None:
    torch.manual_seed(123)  # "CLIP": another initialisation, in CLIP's parameter names
    clip = VLAModel(resolve(make_cfg()).model).state_dict()
    text = {k.removeprefix("text."): v for k, v in clip.items() if k.startswith("text.")}
    save_file({**text, **{k: v for k, v in clip.items() if k.startswith("visual.")}}, tmp_path / "clip.safetensors")
    cfg = make_cfg(
        steps=1, pretrained=str(tmp_path / "clip.safetensors"), optimizer={"lr": 1e-3, "pretrained_lr": 1e-9}
    )
    train(cfg, tiny_data, tmp_path / "run", progress=False)
    assert _log(tmp_path / "run")[0]["lr"] == {
        "new": 5e-4, "new/no_decay": 5e-4, "pretrained": 5e-10, "pretrained/no_decay": 5e-10
    }  # fmt: skip
    after = _weights(tmp_path / "run", 1)
    for k in ("visual.conv1.weight", "text.token_embedding.weight", "visual.transformer.resblocks.0.mlp.c_fc.weight"):
        torch.testing.assert_close(after[k], clip[k], rtol=0, atol=1e-8)  # loaded, then barely moved
    # CLIP4VLA: the audio tower starts as a copy of the (loaded) vision tower
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    torch.testing.assert_close(after[f"audio.{key}"], clip[f"visual.{key}"], rtol=0, atol=1e-8)
    torch.manual_seed(0)  # the run's own initialisation (seed 0): new parameters moved at lr 5e-4
    init = VLAModel(resolve(make_cfg()).model).state_dict()
    assert float((after["decoder.memory_proj.weight"] - init["decoder.memory_proj.weight"]).abs().max()) > 1e-4

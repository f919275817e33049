"""Training data: the preprocessed shards as a map-style Dataset, and a resumable global-batch sampler.

:class:`ShardDataset` checks every shard of a split against ``index.json`` and the model before training starts
(present, the size the index records, a readable safetensors header, shapes that fit the model; optionally the
sha256), then reads single clips by slicing the memory-mapped shard (``safe_open``), so a worker never loads a whole
shard. Items are keyed ``(clip index, epoch)``: the caption drawn for a clip (one of its captions, uniformly) is a
function of the seed, the epoch and the clip, so it does not depend on worker count, rank or resumption.

:class:`GlobalBatchSampler` draws a seeded permutation per epoch, cuts it into global batches of ``batch_size`` clips
(the last partial batch is dropped, so every rank always has a full share) and yields rank ``r``'s contiguous slice of
each. The ranks' slices in rank order are the global batch, which is what lets the all-gathered contrastive loss of N
ranks equal one process's. Its position is just the step: resuming at step k, even with another world size, replays
exactly the batches an uninterrupted run would have seen from step k.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset, Sampler

from avlops.fileio import sha256_file
from avlops.models.vla import AUDIO_TYPE_WEIGHTS, EOT_TOKEN_ID, VLAConfig
from avlops.preprocessing.shards import read_index, read_record
from avlops.task import Batch

__all__ = [
    "DataError",
    "GlobalBatchSampler",
    "ShardDataset",
    "ShardInfo",
    "build_loader",
    "collate",
    "fix_hint",
    "to_batch",
]

log = logging.getLogger(__name__)

#: (clip index, epoch): what the sampler yields and the dataset reads
Key = tuple[int, int]


class DataError(ValueError):
    """The preprocessed dataset is missing, incomplete or corrupt, or its tensors do not fit the model."""


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    clips: int
    frames: int  # N frames per clip
    slices: int  # A audio slices per clip
    context: int  # tokens per caption as stored


class ShardDataset(Dataset[dict[str, torch.Tensor]]):
    """Clips of one split of an ``avlops preprocess`` output folder, checked against ``index.json`` and the model."""

    def __init__(
        self,
        data_dir: str | Path,
        model: VLAConfig,
        *,
        split: str = "train",
        seed: int = 0,
        verify_checksums: bool = False,
        exclude: Mapping[str, str] | None = None,
        model_name: str | None = None,
    ) -> None:
        """``exclude``: clip_id -> why (``avlops.data.exclusions.read_exclusions``): quarantined clips not to use;
        the ones found are in :attr:`dropped`. ``model_name`` (a configs/model name or YAML path) goes into the
        command a mismatch error suggests."""
        self.data_dir = Path(data_dir)
        split = str(split)  # a Split enum reads as its value in messages
        self.seed = seed
        self.context = min(model.text.context_length, model.decoder.context_length)
        index = _read_index(self.data_dir)
        entries = [s for s in index.get("shards", []) if s.get("split") == split and s.get("clips", 0) > 0]
        if not entries:
            found = {s: v.get("clips", 0) for s, v in index.get("splits", {}).items()}
            raise DataError(f"{self.data_dir}: no {split!r} shards to train on (clips per split: {found})")
        hint = fix_hint(self.data_dir, index, model_name)
        self.shards = [_check_shard(self.data_dir, e, model, verify_checksums, hint) for e in entries]
        shapes = {(s.frames, s.slices, s.context) for s in self.shards}
        if len(shapes) != 1:
            raise DataError(f"{self.data_dir}: shards of {split!r} differ in (frames, slices, context): {shapes}")
        # flat position -> (shard, clip in shard), and each clip's audio type weight from its shard's record
        exclude = exclude or {}
        self._where: list[tuple[int, int]] = []
        weights: list[float] = []
        self.dropped: dict[str, str] = {}  # quarantined clips left out: clip_id -> why
        self.with_video = self.with_audio = 0  # kept clips that have frames / sound
        for k, s in enumerate(self.shards):
            has_video, has_audio = _flags(s.path)
            for i, (clip, w) in enumerate(zip(_clip_ids(s.path), _type_weights(s), strict=True)):
                if clip in exclude:
                    self.dropped[clip] = exclude[clip]
                else:
                    self._where.append((k, i))
                    weights.append(w)
                    self.with_video += int(has_video[i])
                    self.with_audio += int(has_audio[i])
        if not self._where:
            raise DataError(f"{self.data_dir}: every {split!r} clip is quarantined ({len(self.dropped)} dropped)")
        self._type_weight = torch.tensor(weights, dtype=torch.float32)
        self.fingerprint = hashlib.sha256(
            json.dumps(
                [
                    index.get("config_hash"),
                    [(e["file"], e["sha256"], e["clips"]) for e in entries],
                    *([sorted(self.dropped)] if self.dropped else []),  # unchanged when nothing is dropped
                ]
            ).encode()
        ).hexdigest()[:16]
        self._handles: dict[int, Any] = {}  # opened lazily in each worker process
        if self.shards[0].context > self.context:
            log.info("captions of %d tokens are cut to the model's %d", self.shards[0].context, self.context)

    def __len__(self) -> int:
        return len(self._where)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: open handles cannot be pickled
        return {**self.__dict__, "_handles": {}}

    def _open(self, shard: int) -> Any:
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.shards[shard].path), framework="pt")
        return self._handles[shard]

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        """One clip with one of its captions: tokens [L], frames [N, 3, R, R], fbank [A, M, T] (storage dtype),
        has_audio [], audio_type_weight [], video_mask [N], audio_mask [A]."""
        index, epoch = key
        shard, i = self._where[index]
        fh = self._open(shard)

        def row(name: str) -> torch.Tensor:
            out: torch.Tensor = fh.get_slice(name)[i : i + 1][0]
            return out

        start, end = (int(x) for x in fh.get_slice("caption_offsets")[i : i + 2])
        pick = int(np.random.default_rng((self.seed, epoch, index)).integers(end - start))
        return {
            "tokens": self._fit_tokens(fh.get_slice("text")[start + pick : start + pick + 1][0]),
            "frames": row("video"),
            "fbank": row("audio"),
            "has_audio": row("has_audio"),
            "audio_type_weight": self._type_weight[index],
            "video_mask": row("video_mask"),
            "audio_mask": row("audio_mask"),
        }

    def _fit_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cut a [ctx] caption to the model's context; a caption that was longer ends with EOT (CLIP's truncation)."""
        if tokens.shape[0] <= self.context:
            return tokens
        cut = tokens[: self.context].clone()
        if bool((tokens[self.context :] != 0).any()):
            cut[-1] = EOT_TOKEN_ID
        return cut


def _read_index(data_dir: Path) -> dict[str, Any]:
    try:
        return read_index(data_dir)
    except FileNotFoundError:
        raise DataError(
            f"{data_dir}: no index.json; not a finished `avlops preprocess` output (run it, or let it finish)"
        ) from None
    except ValueError as err:
        raise DataError(f"{data_dir}: unreadable index.json: {err}") from err


def fix_hint(data_dir: Path, index: Mapping[str, Any], model_name: str | None) -> str:
    """The command that preprocesses this data for the model (what every mismatch message ends with)."""
    manifest = index.get("manifest") or "MANIFEST"
    return (
        f"preprocess it for this model: avlops preprocess --model {model_name or 'MODEL'} --manifest {manifest} "
        f"--out {data_dir}-{Path(model_name).stem if model_name else 'MODEL'}"
    )


def _check_shard(data_dir: Path, entry: dict[str, Any], model: VLAConfig, verify: bool, hint: str) -> ShardInfo:
    """Open one shard's header and check it against its index entry and the model; raise :class:`DataError`."""
    path = data_dir / str(entry["file"])
    if not path.is_file():
        raise DataError(f"{path}: shard listed in index.json is missing")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise DataError(f"{path}: corrupt shard: {size} bytes, index.json records {entry.get('bytes')} (truncated?)")
    if verify and sha256_file(path) != entry.get("sha256"):
        raise DataError(f"{path}: corrupt shard: sha256 differs from index.json")
    try:
        with safe_open(str(path), framework="pt") as fh:
            shapes = {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 - not a mapping
            meta = json.loads((fh.metadata() or {}).get("avlops", "{}"))
    except Exception as err:  # safetensors raises its own error types for a bad header or layout
        raise DataError(f"{path}: corrupt shard: not a readable safetensors file ({err})") from err
    need = ("video", "video_mask", "audio", "audio_mask", "has_audio", "text", "caption_offsets")
    missing = [k for k in need if k not in shapes]
    n = int(entry["clips"])
    if missing or len(meta.get("clip_ids", [])) != n or shapes["caption_offsets"] != [n + 1]:
        raise DataError(f"{path}: corrupt shard: missing {missing} or not {n} clips as index.json records")
    video, audio, text = shapes["video"], shapes["audio"], shapes["text"]
    v, a, d = model.vision, model.audio, model.decoder
    problems = []
    if video[2:] != [3, v.image_size, v.image_size]:
        problems.append(f"frames are {video[2:]}, the model takes [3, {v.image_size}, {v.image_size}]")
    if audio[2:] != [a.mel_bins, a.target_length]:
        problems.append(f"fbank slices are {audio[2:]}, the model takes [{a.mel_bins}, {a.target_length}]")
    if video[1] > d.max_frames or audio[1] > d.max_audio_slices:
        problems.append(
            f"{video[1]} frames / {audio[1]} slices exceed the decoder's {d.max_frames} / {d.max_audio_slices}"
        )
    if problems:
        raise DataError(f"{path}: shard does not fit the model: " + "; ".join(problems) + f"; {hint}")
    return ShardInfo(path, n, video[1], audio[1], text[1])


def _flags(path: Path) -> tuple[list[bool], list[bool]]:
    """Per clip of a shard: has frames (any unmasked frame), has sound."""
    with safe_open(str(path), framework="pt") as fh:
        video: list[bool] = fh.get_tensor("video_mask").bool().any(dim=1).tolist()
        audio: list[bool] = fh.get_tensor("has_audio").bool().tolist()
    return video, audio


def _clip_ids(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as fh:
        ids: list[str] = json.loads((fh.metadata() or {}).get("avlops", "{}")).get("clip_ids", [])
    return ids


def _type_weights(shard: ShardInfo) -> list[float]:
    """Per-clip audio type weights from the shard's record (``{name}.json``); 0.5 ("unknown") where it has none."""
    record = read_record(shard.path.with_suffix(".json")) or {}
    types = {row.get("clip_id"): row.get("audio_type") for row in record.get("stats", [])}
    clip_ids = _clip_ids(shard.path)
    unknown = AUDIO_TYPE_WEIGHTS["unknown"]
    return [AUDIO_TYPE_WEIGHTS.get(str(types.get(c)), unknown) for c in clip_ids]


class GlobalBatchSampler(Sampler[list[Key]]):
    """Endless global batches (epoch after epoch) from ``start_step``; yields this rank's slice of each."""

    def __init__(
        self, size: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} ranks")
        if size < batch_size:
            raise DataError(f"batch_size {batch_size} is larger than the {size} clips of the split")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.local = batch_size // world_size
        self.steps_per_epoch = size // batch_size

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_batch(self, step: int) -> list[Key]:
        """The clips of global step ``step`` (0-based), in rank order."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng((self.seed, epoch)).permutation(self.size)
        chunk = order[offset * self.batch_size : (offset + 1) * self.batch_size]
        return [(int(i), epoch) for i in chunk]

    def __iter__(self) -> Iterator[list[Key]]:
        step = self.start_step
        while True:
            batch = self.global_batch(step)
            yield batch[self.rank * self.local : (self.rank + 1) * self.local]
            step += 1


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack the clips' tensors along a new batch axis (dtypes as stored; the loop casts on the device)."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def to_batch(data: dict[str, torch.Tensor], device: torch.device) -> Batch:
    """A collated dict -> :class:`Batch` on ``device``, frames and fbank as float32."""
    t = {k: v.to(device, non_blocking=True) for k, v in data.items()}
    return Batch(
        tokens=t["tokens"],
        frames=t["frames"].float(),
        fbank=t["fbank"].float(),
        has_audio=t["has_audio"],
        audio_type_weight=t["audio_type_weight"],
        video_mask=t["video_mask"],
        audio_mask=t["audio_mask"],
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers slice and copy; threads would only fight the training process for cores


def build_loader(
    dataset: ShardDataset, sampler: GlobalBatchSampler, *, num_workers: int, pin_memory: bool = False
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader over ``sampler``'s batches (endless; the loop decides when to stop)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
    )

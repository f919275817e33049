"""One split of a preprocessed dataset, with its reference captions, checked against the model to evaluate.

:func:`load_eval_set` reads the small per-clip tensors of every shard of the split (tokens of every caption, masks,
which clips have video and audio) and the manifest's caption strings, and refuses data that does not fit the model
with an error naming what differs: another tokenizer or a longer caption context, frames or fbank slices of another
shape (checked by :class:`avlops.training.data.ShardDataset`, as training checks them), a split that is not there,
clip ids that occur twice, a manifest that no longer matches the shards. Frames and fbanks stay on disk until
:meth:`EvalSet.batches` reads them, a batch at a time.

The manifest is the one ``index.json`` records (a relative path is looked up from the working directory, then from
the data folder's parents), or the one given.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from avlops.data.manifest import read_manifest
from avlops.modality import Modality
from avlops.models.vla import CLIP_VOCAB_SIZE, EOT_TOKEN_ID, VLAConfig, audio_type_weight
from avlops.preprocessing.shards import read_index
from avlops.task import Batch
from avlops.training.data import DataError, ShardDataset, fix_hint

__all__ = ["EvalSet", "MismatchError", "load_eval_set", "resolve_manifest"]


class MismatchError(DataError):
    """The dataset was preprocessed for another model (tokenizer, caption context, frame or fbank shape)."""


@dataclass
class EvalSet:
    """Clips of one split (Nc clips, Nt captions in all), in shard order."""

    data_dir: Path
    split: str
    manifest: Path
    clip_ids: list[str]  # [Nc]
    references: list[list[str]]  # [Nc] the manifest's caption strings
    tokens: Tensor  # [Nt, L] int64 CLIP BPE ids, fit to the model's context
    caption_offsets: Tensor  # [Nc + 1]: clip i's captions are tokens[offsets[i]:offsets[i + 1]]
    has_video: Tensor  # [Nc] bool
    has_audio: Tensor  # [Nc] bool
    video_mask: Tensor  # [Nc, F] bool
    audio_mask: Tensor  # [Nc, S] bool
    audio_type_weight: Tensor  # [Nc] float
    truncated: int  # captions cut to the model's context
    mean: tuple[float, ...]  # the frames' normalisation, to show them
    std: tuple[float, ...]
    _where: list[tuple[Path, int]] = field(repr=False)  # clip -> (shard, row)
    dropped: dict[str, str] = field(default_factory=dict)  # quarantined clips left out: clip_id -> why
    _handles: dict[Path, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def caption_clip(self) -> Tensor:
        """The clip of every caption [Nt]."""
        counts = self.caption_offsets[1:] - self.caption_offsets[:-1]  # [Nc]
        return torch.repeat_interleave(torch.arange(len(self)), counts)

    def caption_text(self, caption: int) -> str:
        clip = int(torch.searchsorted(self.caption_offsets, caption, right=True)) - 1
        return self.references[clip][caption - int(self.caption_offsets[clip])]

    def clips_with(self, modality: Modality) -> Tensor:
        """Clips a group can use [n]: video (v, av) or audio (a)."""
        flag = self.has_audio if modality is Modality.AUDIO else self.has_video
        return flag.nonzero().squeeze(-1)

    def _open(self, shard: Path) -> Any:
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(shard), framework="pt")
        return self._handles[shard]

    def _read(self, name: str, clip: int) -> Tensor:
        shard, row = self._where[clip]
        out: Tensor = self._open(shard).get_slice(name)[row : row + 1][0]
        return out

    def batches(self, clips: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Batch]]:
        """``clips`` (indices, in order) in batches: (their indices [b], a :class:`Batch` with float32 frames
        [b, F, 3, R, R] and fbank [b, S, M, T]; tokens empty). Reads each batch's rows from the shards."""
        for start in range(0, len(clips), batch_size):
            idx = clips[start : start + batch_size]
            frames = torch.stack([self._read("video", int(i)) for i in idx]).float()
            fbank = torch.stack([self._read("audio", int(i)) for i in idx]).float()
            yield (
                idx,
                Batch(
                    tokens=torch.zeros(len(idx), 0, dtype=torch.long),
                    frames=frames,
                    fbank=fbank,
                    has_audio=self.has_audio[idx],
                    audio_type_weight=self.audio_type_weight[idx],
                    video_mask=self.video_mask[idx],
                    audio_mask=self.audio_mask[idx],
                ),
            )

    def thumbnail(self, clip: int, audio: bool = False) -> Tensor:
        """The middle frame as RGB in [0, 1] [R, R, 3], or (``audio``, or a clip without video) the first fbank slice
        [M, T]."""
        if audio or not bool(self.has_video[clip]):
            return self._read("audio", clip)[0].float()  # [M, T]
        frames = self._read("video", clip).float()  # [F, 3, R, R]
        frame = frames[frames.shape[0] // 2]
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        return (frame * std + mean).clamp(0, 1).permute(1, 2, 0)  # [3, R, R] -> [R, R, 3]


def resolve_manifest(data_dir: Path, recorded: str | None, given: str | Path | None = None) -> Path:
    """The manifest holding the reference captions: ``given``, else the path ``index.json`` recorded."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: manifest not found")
        return path
    if not recorded:
        raise FileNotFoundError(f"{data_dir}/index.json names no manifest; give the manifest with --manifest")
    rec = Path(recorded)
    tried = [rec] if rec.is_absolute() else [rec, *(parent / rec for parent in data_dir.resolve().parents)]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the manifest {recorded} that {data_dir}/index.json names was not found (looked in the working directory "
        "and the data folder's parents); give it with --manifest"
    )


def _model_context(model: VLAConfig) -> int:
    return min(model.text.context_length, model.decoder.context_length)


def _fit_tokens(tokens: Tensor, model: VLAConfig, truncate: bool, data_dir: Path, hint: str) -> tuple[Tensor, int]:
    """Check caption tokens [Nt, ctx] against the model's tokenizer and context; cut them as training does when
    allowed. Returns tokens [Nt, L] (L = the longest caption) and how many captions were cut."""
    if model.text.vocab_size != CLIP_VOCAB_SIZE:
        raise MismatchError(
            f"the model's text vocabulary has {model.text.vocab_size} ids, but {data_dir} was tokenised with the CLIP "
            f"BPE tokenizer ({CLIP_VOCAB_SIZE} ids): the model needs another tokenizer than preprocessing used"
        )
    if int(tokens.max()) >= model.text.vocab_size or int(tokens.min()) < 0:
        raise MismatchError(f"{data_dir}: token ids outside [0, {model.text.vocab_size}): another tokenizer's ids?")
    has_eot = (tokens == EOT_TOKEN_ID).any(dim=1)
    if not bool(has_eot.all()):
        raise MismatchError(f"{data_dir}: {int((~has_eot).sum())} caption(s) without an end-of-text token")
    lengths = (tokens == EOT_TOKEN_ID).int().argmax(dim=1) + 1  # [Nt] through the first EOT
    ctx = _model_context(model)
    over = lengths > ctx
    n_over = int(over.sum())
    if n_over and not truncate:
        raise MismatchError(
            f"{data_dir}: {n_over} caption(s) are up to {int(lengths.max())} tokens (context {tokens.shape[1]} at "
            f"preprocessing) but the model reads {ctx}: {hint}; or set evaluate.truncate_captions: true "
            "(--truncate-captions) to cut them as training does"
        )
    width = min(int(lengths.max()), ctx)
    out = tokens[:, :width].clone()  # [Nt, L]
    out[over, width - 1] = EOT_TOKEN_ID  # CLIP's truncation: a cut caption ends with EOT
    return out, n_over


def _split_entries(index: dict[str, Any], split: str, data_dir: Path) -> list[dict[str, Any]]:
    entries = [s for s in index.get("shards", []) if s.get("split") == split and s.get("clips", 0) > 0]
    if not entries:
        found = {s: v.get("clips", 0) for s, v in index.get("splits", {}).items()}
        others = [s for s, n in found.items() if n and s != split]
        hint = f"; evaluate another split with --split {others[0]}" if others else ""
        raise DataError(f"{data_dir}: no {split!r} split to evaluate (clips per split: {found}){hint}")
    return entries


@dataclass
class _Rows:
    """The small per-clip tensors of a split's shards, in shard order (before the checks)."""

    clip_ids: list[str]
    where: list[tuple[Path, int]]
    counts: list[int]  # captions per clip
    parts: dict[str, list[Tensor]]  # text, has_video, has_audio, video_mask, audio_mask: one tensor per shard

    def keep(self, keep: list[int]) -> _Rows:
        """Only the clips at ``keep`` (their captions too); each part becomes one tensor."""
        starts = torch.cumsum(torch.tensor([0, *self.counts]), 0)
        text = torch.cat(self.parts["text"])
        parts = {"text": [torch.cat([text[int(starts[i]) : int(starts[i + 1])] for i in keep])]} if keep else {}
        parts |= {k: [torch.cat(v)[keep]] for k, v in self.parts.items() if k != "text"}
        return _Rows(
            [self.clip_ids[i] for i in keep], [self.where[i] for i in keep], [self.counts[i] for i in keep], parts
        )


def _read_rows(root: Path, entries: list[dict[str, Any]]) -> _Rows:
    rows = _Rows([], [], [], {k: [] for k in ("text", "has_video", "has_audio", "video_mask", "audio_mask")})
    for entry in entries:
        path = root / str(entry["file"])
        with safe_open(str(path), framework="pt") as fh:
            ids = json.loads((fh.metadata() or {}).get("avlops", "{}")).get("clip_ids", [])
            offsets = fh.get_tensor("caption_offsets")
            rows.counts += (offsets[1:] - offsets[:-1]).tolist()
            for k in rows.parts:
                rows.parts[k].append(fh.get_tensor(k))
        rows.clip_ids += ids
        rows.where += [(path, i) for i in range(len(ids))]
    return rows


def load_eval_set(
    data_dir: str | Path,
    model: VLAConfig,
    *,
    split: str = "test",
    manifest: str | Path | None = None,
    truncate_captions: bool = False,
    exclude: Mapping[str, str] | None = None,
    model_name: str | None = None,
) -> EvalSet:
    """Read and check the ``split`` clips of an ``avlops preprocess`` output for ``model`` (see the module doc).

    ``exclude`` (clip_id -> why, ``avlops.data.exclusions.read_exclusions``): quarantined clips left out; the ones
    found are in :attr:`EvalSet.dropped`."""
    root = Path(data_dir)
    try:
        index = read_index(root)
    except FileNotFoundError:
        raise DataError(f"{root}: no index.json; not a finished `avlops preprocess` output") from None
    except ValueError as err:
        raise DataError(f"{root}: unreadable index.json: {err}") from err
    entries = _split_entries(index, split, root)
    # every shard present, intact and shaped for the model (as training)
    ShardDataset(root, model, split=split, model_name=model_name)
    manifest_path = resolve_manifest(root, index.get("manifest"), manifest)

    rows = _read_rows(root, entries)
    exclude = exclude or {}
    dropped = {c: exclude[c] for c in rows.clip_ids if c in exclude}
    if dropped:  # quarantined clips: their rows, captions and positions go
        rows = rows.keep([i for i, c in enumerate(rows.clip_ids) if c not in exclude])
        if not rows.clip_ids:
            raise DataError(f"{root}: every {split!r} clip is quarantined ({len(dropped)} dropped)")
    clip_ids, where, counts, parts = rows.clip_ids, rows.where, rows.counts, rows.parts

    dupes = sorted(c for c, n in Counter(clip_ids).items() if n > 1)
    if dupes:
        raise DataError(f"{root}: the {split!r} split holds {len(dupes)} duplicate clip id(s): {', '.join(dupes[:10])}")
    records = {e.record.clip_id: e.record for e in read_manifest(manifest_path)[0]}
    absent = [c for c in clip_ids if c not in records]
    if absent:
        raise DataError(
            f"{manifest_path}: {len(absent)} clip(s) of {root} are not in this manifest ({', '.join(absent[:5])}); "
            "is it the manifest the data was preprocessed from?"
        )
    changed = [c for c, n in zip(clip_ids, counts, strict=True) if len(records[c].captions) != n]
    if changed:
        raise DataError(
            f"{manifest_path}: the caption count of {len(changed)} clip(s) differs from the shards "
            f"({', '.join(changed[:5])}); the manifest changed after preprocessing: run `avlops preprocess` again"
        )
    hint = fix_hint(root, index, model_name)
    tokens, truncated = _fit_tokens(torch.cat(parts["text"]), model, truncate_captions, root, hint)
    config = index.get("config", {})
    return EvalSet(
        data_dir=root,
        split=split,
        manifest=manifest_path,
        clip_ids=clip_ids,
        references=[list(records[c].captions) for c in clip_ids],
        tokens=tokens,
        caption_offsets=torch.cumsum(torch.tensor([0, *counts]), 0),
        has_video=torch.cat(parts["has_video"]).bool(),
        has_audio=torch.cat(parts["has_audio"]).bool(),
        video_mask=torch.cat(parts["video_mask"]).bool(),
        audio_mask=torch.cat(parts["audio_mask"]).bool(),
        audio_type_weight=torch.tensor([audio_type_weight(records[c].audio_type) for c in clip_ids]),
        truncated=truncated,
        mean=tuple(config.get("mean", (0.0, 0.0, 0.0))),
        std=tuple(config.get("std", (1.0, 1.0, 1.0))),
        _where=where,
        dropped=dropped,
    )

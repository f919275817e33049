"""The preprocessed dataset on disk: safetensors shards, per-shard records, ``index.json``.

Layout of an output folder::

    index.json          written last: the shard list, totals and config hash (absent = incomplete output)
    stats.parquet       one row per preprocessed clip (``avlops.data.stats.ClipStats``)
    quarantine.jsonl    clips that were not preprocessed, with every reason
    {split}-{k:05d}.safetensors   stacked tensors of up to ``shard_size`` clips of one split
    {split}-{k:05d}.json          the shard's record: config hash, input fingerprint, sha256, clip ids, stats
                                   rows and problems; written after the shard, it marks the shard complete
    .lock               held (flock) while a run writes here: two runs never share an output folder

A shard holds (n clips, N frames, A audio slices, C captions in all):

    video        [n, N, 3, R, R]  float32|float16   CLIP-normalised frames (zeros where has_video is False)
    video_mask   [n, N]           bool              False where a frame only repeats the last one
    has_video    [n]              bool
    audio        [n, A, mel, T]   float32|float16   normalised fbank slices (zeros where has_audio is False)
    audio_mask   [n, A]           bool              False where a slice repeats the last one, or no audio
    has_audio    [n]              bool
    text         [C, ctx]         int64             CLIP BPE ids of every caption, clip after clip
    caption_offsets [n + 1]       int64             clip i's captions are text[offsets[i]:offsets[i + 1]]

plus the header metadata key ``avlops``: a JSON object with ``clip_ids``, ``split``, ``config_hash``,
``train_sampling`` and ``format_version``. Shards are numbered per split in manifest order, so shard ``k`` of a split
always holds the same planned clips (minus quarantined ones) whatever the worker count.

safetensors holds raw tensors and a JSON header, so reading a shard never unpickles anything. Shards are written
part by part by :func:`write_shard` (the format is simple: a length, a JSON header, the raw bytes), so a shard is never
held in memory twice; they are read with the ``safetensors`` library, which validates the layout.

Every file is written atomically (:mod:`avlops.fileio`): a reader, or a resumed run, sees either the old file or the
complete new one, never half a shard.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from avlops.fileio import read_json_object, write_atomic

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "STACKED_KEYS",
    "ShardData",
    "load_shard",
    "read_index",
    "read_record",
    "shard_bytes",
    "write_parquet_atomic",
    "write_shard",
]

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
#: per-clip tensors stacked along a new first axis; ``text`` is ragged and stored with ``caption_offsets``.
STACKED_KEYS = ("video", "video_mask", "has_video", "audio", "audio_mask", "has_audio")
_FLOAT_KEYS = ("video", "audio")
_META_KEY = "avlops"


def write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as parquet to ``path`` atomically (see :mod:`avlops.fileio`)."""
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))


_SAFETENSORS_DTYPES = {
    np.dtype(np.int64): "I64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.bool_): "BOOL",
}


def _layout(
    clip_ids: Sequence[str], clips: Sequence[Mapping[str, Any]], dtype: str
) -> list[tuple[str, np.dtype[Any], list[int], list[np.ndarray]]]:
    """(name, dtype, shape, per-clip parts) of every shard tensor, 8-byte types first so every tensor stays aligned."""
    if len(clip_ids) != len(clips) or not clips:
        raise ValueError("need one tensor dict per clip id, and at least one clip")
    store = np.dtype(dtype)

    def arr(x: Any, dt: np.dtype[Any] | None = None) -> np.ndarray:
        a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return np.asarray(a if dt is None else a.astype(dt, copy=False), order="C")  # keeps 0-d arrays 0-d

    texts = [arr(c["text"], np.dtype(np.int64)) for c in clips]  # each [C_i, ctx]
    offsets = np.cumsum([0] + [t.shape[0] for t in texts], dtype=np.int64)  # [n + 1]
    out: list[tuple[str, np.dtype[Any], list[int], list[np.ndarray]]] = [
        ("text", np.dtype(np.int64), [int(offsets[-1]), texts[0].shape[1]], texts),
        ("caption_offsets", np.dtype(np.int64), [len(clips) + 1], [offsets]),
    ]
    for key in (*_FLOAT_KEYS, *(k for k in STACKED_KEYS if k not in _FLOAT_KEYS)):
        parts = [arr(c[key], store if key in _FLOAT_KEYS else None) for c in clips]
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"{key}: clips have different shapes {sorted(shapes)}")
        out.append((key, parts[0].dtype, [len(parts), *parts[0].shape], parts))
    return out


def _serialize(
    fh: BinaryIO, clip_ids: Sequence[str], clips: Sequence[Mapping[str, Any]], meta: dict[str, Any], dtype: str
) -> tuple[int, str]:
    """Write a safetensors file to ``fh`` part by part (no stacked copy in memory); returns its size and sha256."""
    layout = _layout(clip_ids, clips, dtype)
    header: dict[str, Any] = {"__metadata__": {_META_KEY: json.dumps(meta, sort_keys=True)}}
    pos = 0
    for name, dt, shape, parts in layout:
        size = sum(p.nbytes for p in parts)
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dt], "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-(8 + len(head)) % 8)  # pad so the data starts 8-byte aligned, as safetensors does
    h = hashlib.sha256()
    for chunk in (len(head).to_bytes(8, "little"), head):
        fh.write(chunk)
        h.update(chunk)
    for _, _, _, parts in layout:
        for p in parts:
            view = p.data.cast("B")  # raw bytes of the C-contiguous array, no copy
            fh.write(view)
            h.update(view)
    return 8 + len(head) + pos, h.hexdigest()


def _shard_meta(clip_ids: Sequence[str], split: str, config_hash: str, train_sampling: bool) -> dict[str, Any]:
    return {
        "clip_ids": list(clip_ids),
        "split": split,
        "config_hash": config_hash,
        "train_sampling": train_sampling,
        "format_version": FORMAT_VERSION,
    }


def write_shard(
    path: Path,
    clip_ids: Sequence[str],
    clips: Sequence[Mapping[str, Any]],
    *,
    split: str,
    config_hash: str,
    train_sampling: bool,
    dtype: str = "float32",
) -> tuple[int, str]:
    """Write per-clip tensors (keys :data:`STACKED_KEYS` plus ``text [C_i, ctx]``; torch or numpy) as one shard,
    atomically; returns the file's size and sha256. Frames and fbanks are stored as ``dtype``."""
    meta = _shard_meta(clip_ids, split, config_hash, train_sampling)
    result: list[tuple[int, str]] = []

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            result.append(_serialize(fh, clip_ids, clips, meta, dtype))

    write_atomic(path, write)
    return result[0]


def shard_bytes(
    clip_ids: Sequence[str],
    clips: Sequence[Mapping[str, Any]],
    *,
    split: str,
    config_hash: str,
    train_sampling: bool,
    dtype: str = "float32",
) -> bytes:
    """The bytes :func:`write_shard` would write (same serializer), for in-memory use."""
    buf = io.BytesIO()
    _serialize(buf, clip_ids, clips, _shard_meta(clip_ids, split, config_hash, train_sampling), dtype)
    return buf.getvalue()


@dataclass(frozen=True)
class ShardData:
    """One shard read back: its clip ids, metadata and stacked tensors."""

    path: Path
    clip_ids: list[str]
    split: str
    config_hash: str
    train_sampling: bool
    tensors: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def clip(self, i: int) -> dict[str, torch.Tensor]:
        """Clip ``i``'s tensors, with ``text`` cut back to its own captions ``[C_i, ctx]``."""
        off = self.tensors["caption_offsets"]
        out = {k: self.tensors[k][i] for k in STACKED_KEYS}
        out["text"] = self.tensors["text"][int(off[i]) : int(off[i + 1])]
        return out


def load_shard(path: Path, expected_hash: str | None = None) -> ShardData:
    """Read a shard (no unpickling); with ``expected_hash`` refuse one written under another config."""
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get(_META_KEY, "{}"))
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a mapping
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: shard format {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if expected_hash is not None and meta.get("config_hash") != expected_hash:
        raise ValueError(f"{path}: written with config {meta.get('config_hash')}, expected {expected_hash}")
    clip_ids = list(meta["clip_ids"])
    if tensors["caption_offsets"].shape[0] != len(clip_ids) + 1:
        raise ValueError(f"{path}: caption_offsets does not match {len(clip_ids)} clips")
    return ShardData(
        path=path,
        clip_ids=clip_ids,
        split=meta["split"],
        config_hash=meta["config_hash"],
        train_sampling=bool(meta["train_sampling"]),
        tensors=tensors,
    )


def read_record(path: Path) -> dict[str, Any] | None:
    """A shard's JSON record, or None when it is missing or unreadable (the shard then counts as not done)."""
    try:
        return read_json_object(path, what="shard record")
    except (OSError, ValueError):
        return None


def read_index(out: Path) -> dict[str, Any]:
    """``index.json`` of a finished output folder; raises FileNotFoundError while a run is incomplete."""
    path = out / INDEX_NAME
    data = read_json_object(path, what="index", hint=" (the preprocessing run has not finished)")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
    return data

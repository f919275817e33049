"""The searchable catalogue: every clip's frame and audio-slice features under one model, and text → top-k search.

:func:`build_catalogue` encodes the clips of an ``avlops preprocess`` output with the eager model (the library's
``encode_video`` / ``encode_audio``) into one ``catalogue.safetensors`` that names the checkpoint it was built with;
registration copies it into the version of ``catalogue_search``, so a catalogue is versioned with its model.
:func:`search_scores` scores a text batch against a catalogue with ``avlops.task.similarity_matrix`` (the same
function training and evaluation use; T-AV group: frames and audio slices); the served search
(:mod:`avlops.serving.search`) computes the same scores in numpy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from avlops.modality import ModalityGroup
from avlops.models.vla import AUDIO_TYPE_WEIGHTS, TextFeatures, VLAModel, VLAOutput, fuse_audiovisual
from avlops.objective import ObjectiveConfig, Similarity
from avlops.preprocessing.shards import load_shard, read_index, read_record
from avlops.serving.contract import Tensors
from avlops.task import Batch, GroupFeatures, group_features, similarity_matrix

__all__ = ["Catalogue", "CatalogueError", "build_catalogue", "publish_catalogue", "search_scores"]

_T = Tensors
FORMAT = "avlops.catalogue"


class CatalogueError(ValueError):
    """A catalogue that cannot be built or read, or that belongs to another model."""


@dataclass(frozen=True)
class Catalogue:
    clip_ids: list[str]
    splits: list[str]
    video_feats: torch.Tensor  # [N, F, C]
    video_mask: torch.Tensor  # [N, F] bool
    audio_feats: torch.Tensor  # [N, S, C]
    audio_mask: torch.Tensor  # [N, S] bool (all False for a clip without sound)
    meta: dict[str, Any]  # checkpoint_sha256, data, config_hash, built_at

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def dropped(self) -> dict[str, str]:
        """Quarantined clips of the data left out of the catalogue: clip_id -> why."""
        return dict(self.meta.get("dropped") or {})

    def save(self, path: Path) -> Path:
        """Write ``path`` (a ``.safetensors`` file, or a folder to hold ``catalogue.safetensors``)."""
        if path.suffix != ".safetensors":
            path = path / "catalogue.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "clip_ids": self.clip_ids, "splits": self.splits, **self.meta}
        tensors = {
            _T.VIDEO_FEATS: self.video_feats.contiguous(),
            _T.VIDEO_MASK: self.video_mask.contiguous(),
            _T.AUDIO_FEATS: self.audio_feats.contiguous(),
            _T.AUDIO_MASK: self.audio_mask.contiguous(),
        }
        save_file(tensors, str(path), metadata={FORMAT: json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        if path.is_dir():
            path = path / "catalogue.safetensors"
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = json.loads((fh.metadata() or {})[FORMAT])
                t = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a mapping
        except (OSError, KeyError, ValueError) as err:
            raise CatalogueError(f"{path}: not a readable catalogue ({err})") from err
        except Exception as err:  # safetensors raises its own error types for a bad header
            raise CatalogueError(f"{path}: not a readable catalogue ({err})") from err
        ids, splits = header.pop("clip_ids"), header.pop("splits")
        header.pop("format", None)
        return cls(ids, splits, t[_T.VIDEO_FEATS], t[_T.VIDEO_MASK], t[_T.AUDIO_FEATS], t[_T.AUDIO_MASK], header)

    def clip_side(self, model: VLAModel) -> GroupFeatures:
        """The T-AV group features of every clip ([N, F+S, C], mask, token-weight logits), as training computes them."""
        has_audio = self.audio_mask.any(dim=1)  # [N]
        fused = fuse_audiovisual(self.video_feats, self.audio_feats, has_audio, self.video_mask, self.audio_mask)
        n = len(self)
        batch = Batch(
            tokens=torch.zeros(n, 1, dtype=torch.long),
            frames=torch.empty(0),
            fbank=torch.empty(0),
            has_audio=has_audio,
            audio_type_weight=torch.zeros(n),
            video_mask=self.video_mask,
            audio_mask=self.audio_mask,
        )
        out = VLAOutput(TextFeatures(*(torch.empty(0),) * 3), self.video_feats, self.audio_feats, fused)
        with torch.inference_mode():
            return group_features(model, out, batch, ModalityGroup.T_AV)


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, k, ...] -> [B, n, ...] with zeros / False (catalogues may mix splits sampled with other frame counts)."""
    if x.shape[1] == n:
        return x
    out = x.new_zeros((x.shape[0], n, *x.shape[2:]))
    out[:, : x.shape[1]] = x
    return out


@torch.inference_mode()
def build_catalogue(
    model: VLAModel,
    data_dir: Path,
    *,
    splits: Sequence[str] | None = None,
    checkpoint_sha256: str | None = None,
    batch_size: int = 32,
    exclude: Mapping[str, str] | None = None,
) -> Catalogue:
    """Encode every clip of ``splits`` (default: all) of an ``avlops preprocess`` folder with ``model``.

    ``exclude`` (clip_id -> why, ``avlops.data.exclusions.read_exclusions``): quarantined clips left out; the ones
    found are recorded in the catalogue (:attr:`Catalogue.dropped`, and so in the model card of its version)."""
    try:
        index = read_index(data_dir)
    except (FileNotFoundError, ValueError) as err:
        raise CatalogueError(f"{data_dir}: {err}") from err
    shards = [s for s in index.get("shards", []) if splits is None or s.get("split") in splits]
    if not shards:
        raise CatalogueError(f"{data_dir}: no shards of the splits {list(splits or [])} to build a catalogue from")
    model = model.eval()
    exclude = exclude or {}
    dropped: dict[str, str] = {}
    ids: list[str] = []
    split_of: list[str] = []
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in (_T.VIDEO_FEATS, _T.VIDEO_MASK, _T.AUDIO_FEATS, _T.AUDIO_MASK)
    }
    for entry in shards:
        path = data_dir / str(entry["file"])
        try:
            shard = load_shard(path)
        except (OSError, ValueError, KeyError) as err:
            raise CatalogueError(f"{path}: unreadable shard ({err})") from err
        types = {
            r.get("clip_id"): r.get("audio_type")
            for r in (read_record(path.with_suffix(".json")) or {}).get("stats", [])
        }
        keep = [i for i, c in enumerate(shard.clip_ids) if c not in exclude]
        dropped |= {c: exclude[c] for c in shard.clip_ids if c in exclude}
        if not keep:
            continue
        shard_ids = [shard.clip_ids[i] for i in keep]
        weights = torch.tensor([AUDIO_TYPE_WEIGHTS.get(str(types.get(c)), 0.5) for c in shard_ids])
        rows = torch.tensor(keep)
        t = {k: shard.tensors[k][rows] for k in ("video", "video_mask", "audio", "audio_mask", "has_audio")}
        for s in range(0, len(keep), batch_size):
            sl = slice(s, s + batch_size)
            audio_mask = t["audio_mask"][sl].bool() & t["has_audio"][sl].bool()[:, None]
            parts[_T.VIDEO_FEATS].append(model.encode_video(t["video"][sl].float()))
            parts[_T.VIDEO_MASK].append(t["video_mask"][sl].bool())
            parts[_T.AUDIO_FEATS].append(model.encode_audio(t["audio"][sl].float(), weights[sl]))
            parts[_T.AUDIO_MASK].append(audio_mask)
        ids += shard_ids
        split_of += [shard.split] * len(keep)
    if not ids:
        raise CatalogueError(f"{data_dir}: every clip is quarantined ({len(dropped)} dropped); no catalogue to build")
    if len(set(ids)) != len(ids):
        raise CatalogueError(f"{data_dir}: clip ids repeat across shards")
    stacked = {}
    for key, xs in parts.items():
        n = max(x.shape[1] for x in xs)
        stacked[key] = torch.cat([_pad(x, n) for x in xs])
    meta = {
        "checkpoint_sha256": checkpoint_sha256,
        "data": str(data_dir),
        "config_hash": index.get("config_hash"),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dropped": dropped,
    }
    return Catalogue(
        ids,
        split_of,
        stacked[_T.VIDEO_FEATS],
        stacked[_T.VIDEO_MASK],
        stacked[_T.AUDIO_FEATS],
        stacked[_T.AUDIO_MASK],
        meta,
    )


def search_scores(
    model: VLAModel, text: TextFeatures, clips: GroupFeatures, objective: ObjectiveConfig, similarity: Similarity
) -> torch.Tensor:
    """Text [B] x catalogue [N] scores [B, N] by ``similarity_matrix`` with the chosen similarity.

    Token positions after the longest caption's EOT are dropped first: they are masked, so the scores do not change.
    """
    keep = int(text.token_mask.sum(dim=1).max())
    trimmed = TextFeatures(text.token_feats[:, :keep], text.token_mask[:, :keep], text.pooled)
    return similarity_matrix(model, trimmed, clips, dataclasses.replace(objective, similarity=similarity))


def publish_catalogue(catalogue: Catalogue, model_version: int, features: Any) -> Any:
    """Publish the catalogue's T-AV clip embeddings to the Feast store of ``features`` (a ``FeaturesConfig``)."""
    from avlops.features.embeddings import publish_embeddings  # Feast: imported only to publish
    from avlops.serving.pooling import pool_groups

    c = catalogue
    pooled = pool_groups(c.video_feats.numpy(), c.video_mask.numpy(), c.audio_feats.numpy(), c.audio_mask.numpy())
    return publish_embeddings(
        features,
        catalogue.clip_ids,
        pooled[_T.TAV_EMBED],
        model_version,
        str(catalogue.meta.get("checkpoint_sha256") or ""),
    )

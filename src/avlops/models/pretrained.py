"""Load OpenAI-CLIP / open_clip weights onto :class:`~avlops.models.vla.VLAModel`, with a report of what happened.

Our towers mirror CLIP's parameter names, so the mapping is a rename:

* ``visual.*`` (conv1, class_embedding, positional_embedding, ln_pre, transformer, ln_post, proj) -> ``visual.*``;
* ``token_embedding``, ``positional_embedding``, ``transformer.*``, ``ln_final``, ``text_projection`` -> ``text.*``
  (open_clip's ``text_projection.weight`` of a Linear layer is transposed into CLIP's matrix);
* ``logit_scale`` -> ``logit_scale``;
* the audio tower is then initialised from the loaded vision tower as CLIP4VLA does (``init_from_vision``).

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``; nothing is ever unpickled as code.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from avlops.models.vla import VLAModel

__all__ = ["IGNORED_KEYS", "LoadReport", "ShapeMismatch", "load_clip_state_dict", "read_state_dict"]

#: Non-parameter entries of CLIP checkpoints (OpenAI's TorchScript metadata, open_clip's causal-mask buffer).
IGNORED_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask", "text.attn_mask"})
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclass(frozen=True)
class ShapeMismatch:
    source: str
    target: str
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.source} {self.source_shape} -> {self.target} {self.target_shape}"


@dataclass(frozen=True)
class LoadReport:
    """What ``load_clip_state_dict`` did; every name is sorted."""

    matched: tuple[str, ...]  # our parameters copied from the state dict
    missing: tuple[str, ...]  # our text / vision / logit_scale parameters the state dict did not provide
    unexpected: tuple[str, ...]  # source keys with no place in our model
    shape_mismatch: tuple[ShapeMismatch, ...]  # source keys whose tensor does not fit (left untouched)
    audio_from_vision: tuple[str, ...] = ()  # audio parameters initialised from the vision tower
    audio_error: str | None = None  # why the audio tower could not be initialised from vision

    @property
    def complete(self) -> bool:
        """True when every CLIP-side parameter was loaded and nothing was left over or refused."""
        return not (self.missing or self.unexpected or self.shape_mismatch or self.audio_error)

    def summary(self) -> str:
        lines = [
            f"matched {len(self.matched)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape mismatch {len(self.shape_mismatch)}, audio from vision {len(self.audio_from_vision)}"
        ]
        lines += [f"  missing: {k}" for k in self.missing]
        lines += [f"  unexpected: {k}" for k in self.unexpected]
        lines += [f"  shape mismatch: {m}" for m in self.shape_mismatch]
        if self.audio_error:
            lines.append(f"  audio not initialised: {self.audio_error}")
        return "\n".join(lines)


def _target_key(key: str) -> str | None:
    """CLIP key -> our parameter name (None when it belongs to no tower we have)."""
    if key.startswith("visual.") or key == "logit_scale":
        return key
    if key == "text_projection.weight":  # open_clip with a Linear projection: weight [C, W]
        return "text.text_projection"
    if key.startswith(_TEXT_PREFIXES):
        return "text." + key
    return None


def load_clip_state_dict(model: VLAModel, state_dict: Mapping[str, Tensor], *, init_audio: bool = True) -> LoadReport:
    """Copy a CLIP-layout ``state_dict`` into ``model``'s text and vision towers (and temperature), in place.

    Tensors whose shape does not fit are skipped and reported, never reshaped silently. With ``init_audio`` the audio
    tower is then initialised from the (loaded) vision tower; if its shape does not allow that, the reason is
    reported in ``audio_error``.
    """
    own = model.state_dict()
    expected = {k for k in own if k.startswith(("text.", "visual.")) or k == "logit_scale"}
    matched, unexpected, mismatched = [], [], []
    with torch.no_grad():
        for key, value in state_dict.items():
            if key in IGNORED_KEYS:
                continue
            target = _target_key(key)
            if target is None or target not in own:
                unexpected.append(key)
                continue
            src = value.t() if key == "text_projection.weight" else value
            if tuple(src.shape) != tuple(own[target].shape):
                mismatched.append(ShapeMismatch(key, target, tuple(src.shape), tuple(own[target].shape)))
                continue
            own[target].copy_(src.to(own[target].dtype))
            matched.append(target)
    audio_loaded: list[str] = []
    audio_error = None
    if init_audio:
        try:
            audio_loaded = model.audio.init_from_vision(model.visual.state_dict())
        except (KeyError, ValueError) as err:
            audio_error = str(err)
    return LoadReport(
        matched=tuple(sorted(matched)),
        missing=tuple(sorted(expected - set(matched))),
        unexpected=tuple(sorted(unexpected)),
        shape_mismatch=tuple(sorted(mismatched, key=lambda m: m.source)),
        audio_from_vision=tuple(sorted(audio_loaded)),
        audio_error=audio_error,
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only``), CPU tensors.

    A training checkpoint ``{"state_dict": {...}}`` is unwrapped and DDP's ``module.`` prefix dropped. OpenAI's
    TorchScript ``.pt`` archives are refused: they hold code, so load them yourself only if you trust the file
    (``torch.jit.load(path, map_location="cpu").state_dict()``) and pass the dict to :func:`load_clip_state_dict`.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            if any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist()):
                raise ValueError(f"{p}: a TorchScript archive (holds code); see read_state_dict's docstring")
    data = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{p}: expected a mapping of names to tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}

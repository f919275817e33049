"""A typed client of the served models over ``tritonclient`` gRPC (HTTP as an option).

Inputs are built and outputs read by the contract's names and dtypes (:mod:`avlops.serving.contract`). Every call
has a deadline (``timeout_s``); UNAVAILABLE (server starting, restarting, draining or overloaded, connection refused)
is retried ``retries`` times with exponential backoff, and so is a model that "has no available versions" (Triton
unloads its models while it stops: the model exists, the server is going away); errors come back typed:
:class:`InvalidInputError` (INVALID_ARGUMENT: the request was refused, the server goes on), :class:`ModelNotFoundError`
(unknown model or version), :class:`PermissionDeniedError` (a closed API or a model the endpoint does not expose),
:class:`ServerUnavailableError`, :class:`DeadlineExceededError`, else :class:`ServingError`. Results name clips and
scores (:class:`SearchHit`), and captions (:class:`Caption`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import numpy as np

from avlops.serving.contract import (
    CAPTION,
    EMBED_CLIP,
    EMBED_CLIP_ARRAYS,
    EMBED_TEXT,
    SEARCH,
    Tensors,
    decode_texts,
    encode_texts,
    tensor_dtypes,
)

__all__ = [
    "Caption",
    "ClipEmbedding",
    "DeadlineExceededError",
    "InvalidInputError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "SearchHit",
    "ServerUnavailableError",
    "ServingClient",
    "ServingError",
    "TextEmbedding",
]

_T = Tensors
_DTYPES = tensor_dtypes()
R = TypeVar("R")


class ServingError(RuntimeError):
    """A request the server did not answer with results; ``status`` is the gRPC status name (or HTTP code)."""

    def __init__(self, message: str, status: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status


class InvalidInputError(ServingError):
    """INVALID_ARGUMENT: the request was refused (bad dtype, shape or value, too large, undecodable media)."""


class ModelNotFoundError(ServingError):
    """NOT_FOUND: no such model, or not that version, on the server."""


class PermissionDeniedError(ServingError):
    """PERMISSION_DENIED (HTTP 403): an admin API, or a model the public endpoint does not expose."""


class ServerUnavailableError(ServingError):
    """UNAVAILABLE after every retry: no server at the address, or it is not serving."""


class DeadlineExceededError(ServingError):
    """The call took longer than its timeout."""


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1 = best
    clip_id: str
    score: float


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: list[int]


@dataclass(frozen=True)
class TextEmbedding:
    embedding: np.ndarray  # [B, C] pooled (EOT) text features, not normalised
    token_feats: np.ndarray  # [B, L, C] (zeros after each caption's EOT)
    token_mask: np.ndarray  # [B, L] bool


@dataclass(frozen=True)
class ClipEmbedding:
    tv: np.ndarray  # [C] masked mean of the frame features (T-V group)
    ta: np.ndarray  # [C] masked mean of the audio-slice features (T-A; zeros without sound)
    tav: np.ndarray  # [C] both (T-AV)
    video_feats: np.ndarray  # [F, C]
    video_mask: np.ndarray  # [F]
    audio_feats: np.ndarray  # [S, C]
    audio_mask: np.ndarray  # [S]


def _status(err: Exception) -> str:
    status = getattr(err, "status", lambda: None)()
    text = str(status or "")
    return text.removeprefix("StatusCode.") if text else "UNKNOWN"


def _typed(err: Exception, model: str) -> ServingError:
    """A tritonclient / connection error as one of this module's errors."""
    status = _status(err)
    message = getattr(err, "message", lambda: str(err))() or str(err)
    if isinstance(err, ConnectionError | OSError) and status == "UNKNOWN":
        return ServerUnavailableError(f"{model}: cannot connect: {err}", "UNAVAILABLE")
    if status in ("INVALID_ARGUMENT", "400", "RESOURCE_EXHAUSTED", "413"):  # the last two: over the proxy's size limit
        return InvalidInputError(f"{model}: {message}", status)
    if status in ("PERMISSION_DENIED", "403") or "is restricted, expecting header" in message:
        return PermissionDeniedError(f"{model}: {message}", "PERMISSION_DENIED")
    if "has no available versions" in message:  # a stopping server unloads its models: retry elsewhere / later
        return ServerUnavailableError(f"{model}: server stopping: {message}", "UNAVAILABLE")
    if status in ("NOT_FOUND", "404") or "unknown model" in message or "is not found" in message:
        return ModelNotFoundError(f"{model}: {message}", status)
    if status in ("UNAVAILABLE", "503"):
        return ServerUnavailableError(f"{model}: server unavailable: {message}", status)
    if status == "DEADLINE_EXCEEDED" or "Deadline Exceeded" in message or "timed out" in message:
        return DeadlineExceededError(f"{model}: {message}", "DEADLINE_EXCEEDED")
    return ServingError(f"{model}: {message}", status)


class ServingClient:
    """Clients of one server (``url`` = host:port of its gRPC, or HTTP with ``protocol="http"``) and one served
    version (``version`` "" = the one the server serves)."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        protocol: Literal["grpc", "http"] = "grpc",
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        version: str = "",
    ) -> None:
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.retries, self.backoff_s, self.version = retries, backoff_s, version
        if protocol == "grpc":
            import tritonclient.grpc as module
        elif protocol == "http":
            import tritonclient.http as module
        else:
            raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
        self._module: Any = module
        if protocol == "grpc":
            self._client: Any = module.InferenceServerClient(url)
        else:
            self._client = module.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _call(self, model: str, fn: Callable[[], R]) -> R:
        """``fn()`` with retries on UNAVAILABLE and errors mapped to this module's types."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as err:  # tritonclient raises its own exception type and plain connection errors
                typed = _typed(err, model)
                if isinstance(typed, ServerUnavailableError) and attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
                    continue
                raise typed from err
        raise AssertionError("unreachable")

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (batched arrays by contract name) and return the requested ``outputs``."""
        m = self._module
        request = []
        for name, array in inputs.items():
            dtype = _DTYPES[name]
            a = np.ascontiguousarray(array, dtype=dtype.numpy)
            x = m.InferInput(name, list(a.shape), dtype.value)
            x.set_data_from_numpy(a)
            request.append(x)
        wanted = [m.InferRequestedOutput(o) for o in outputs]

        def run() -> Any:
            if self.protocol == "grpc":
                return self._client.infer(
                    model, request, model_version=self.version, outputs=wanted, client_timeout=self.timeout_s
                )
            return self._client.infer(model, request, model_version=self.version, outputs=wanted)

        result = self._call(model, run)
        return {o: result.as_numpy(o) for o in outputs}

    def is_ready(self) -> bool:
        return bool(self._call("server", lambda: self._client.is_server_ready()))

    def served_version(self, model: str = SEARCH) -> dict[str, str]:
        """The registry version and alias ``model`` is served at (from its configuration's parameters)."""
        if self.protocol == "grpc":
            cfg = self._call(model, lambda: self._client.get_model_config(model, self.version, as_json=True))["config"]
        else:
            cfg = self._call(model, lambda: self._client.get_model_config(model, self.version))
        params = cfg.get("parameters", {})
        return {k.removeprefix("avlops."): v.get("string_value", "") for k, v in params.items() if "avlops." in k}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the served models --------------------------------------------------------------------------------------
    def search(self, text: str, k: int = 5) -> list[SearchHit]:
        """The ``k`` catalogue clips that best match ``text``, best first."""
        return self.search_many([text], k)[0]

    def search_many(self, texts: Sequence[str], k: int = 5) -> list[list[SearchHit]]:
        out = self.infer(
            SEARCH,
            {_T.TEXT: encode_texts(texts), _T.TOP_K: np.full((len(texts), 1), k, dtype=np.int32)},
            [_T.CLIP_IDS, _T.SCORES],
        )
        return [
            [
                SearchHit(rank + 1, cid, float(s))
                for rank, (cid, s) in enumerate(zip(decode_texts(ids), scores, strict=True))
            ]
            for ids, scores in zip(out[_T.CLIP_IDS], out[_T.SCORES], strict=True)
        ]

    def embed_text(self, texts: Sequence[str]) -> TextEmbedding:
        out = self.infer(EMBED_TEXT, {_T.TEXT: encode_texts(texts)}, [_T.TEXT_EMBED, _T.TOKEN_FEATS, _T.TOKEN_MASK])
        return TextEmbedding(out[_T.TEXT_EMBED], out[_T.TOKEN_FEATS], out[_T.TOKEN_MASK])

    def _clip(self, model: str, inputs: dict[str, np.ndarray]) -> ClipEmbedding:
        names = [_T.TV_EMBED, _T.TA_EMBED, _T.TAV_EMBED, _T.VIDEO_FEATS, _T.VIDEO_MASK, _T.AUDIO_FEATS, _T.AUDIO_MASK]
        out = self.infer(model, inputs, names)
        return ClipEmbedding(*(out[n][0] for n in names))

    def embed_clip(self, media: bytes | Path, audio_type: str = "unknown") -> ClipEmbedding:
        """Embeddings of an encoded clip (a file's bytes or path: mp4, webm, wav, png, ...)."""
        return self._clip(EMBED_CLIP, _media_inputs(media, audio_type))

    def embed_clip_arrays(
        self, frames: np.ndarray, waveform: np.ndarray, sample_rate: int, audio_type: str = "unknown"
    ) -> ClipEmbedding:
        """Embeddings of a decoded clip: RGB frames [T, H, W, 3] uint8 and a mono waveform [S] at ``sample_rate``."""
        inputs = {
            _T.RAW_FRAMES: np.asarray(frames)[None],
            _T.WAVEFORM: np.asarray(waveform, dtype=np.float32).reshape(1, -1),
            _T.SAMPLE_RATE: np.array([[sample_rate]], dtype=np.int32),
            _T.AUDIO_TYPE: encode_texts([audio_type]),
        }
        return self._clip(EMBED_CLIP_ARRAYS, inputs)

    def caption(self, media: bytes | Path, audio_type: str = "unknown") -> Caption:
        """A caption of an encoded clip (beam search over its frames and sound)."""
        out = self.infer(CAPTION, _media_inputs(media, audio_type), [_T.CAPTION, _T.CAPTION_TOKENS])
        return Caption(decode_texts(out[_T.CAPTION])[0], [int(t) for t in out[_T.CAPTION_TOKENS][0]])


def _media_inputs(media: bytes | Path, audio_type: str) -> dict[str, np.ndarray]:
    data = Path(media).read_bytes() if isinstance(media, Path) else bytes(media)
    return {_T.MEDIA: np.frombuffer(data, dtype=np.uint8)[None], _T.AUDIO_TYPE: encode_texts([audio_type])}

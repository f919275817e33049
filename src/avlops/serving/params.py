"""Config of serving: the request limits and batching a registered version is served with (``registry`` in
``params.yaml``, recorded in every version), and how ``avlops serve`` starts the local server (``serve``).

Light on purpose (pydantic only), like every section model.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from avlops.config import StrictModel

__all__ = [
    "REQUEST_OVERHEAD_BYTES",
    "BatchingConfig",
    "SearchSimilarity",
    "ServeConfig",
    "ServingLimits",
    "request_limit",
]

#: Room for everything in a request besides an encoded clip: framing, tensor metadata, audio_type, a text batch.
REQUEST_OVERHEAD_BYTES = 1 << 16


class SearchSimilarity(StrEnum):
    """How ``search`` scores text against the catalogue (bench/results/serving.md compares them)."""

    MODEL = "model"  # what the model was trained with (its objective's similarity): the library's own scoring
    FINE = "fine"  # VALOR's token-wise similarity with learned weights (avlops.losses.fine_similarity)
    COARSE = "coarse"  # cosine of the pooled text and clip embeddings


class ServingLimits(StrictModel):
    """What a request may hold; anything beyond is refused with INVALID_ARGUMENT before any work is done."""

    max_text_chars: int = Field(1000, ge=1, description="the dataset contract's caption limit")
    max_media_bytes: int = Field(64 * 2**20, ge=1, description="an encoded clip's size")
    max_media_seconds: float = Field(120.0, gt=0, description="a clip's (or a waveform's) duration")
    max_raw_frames: int = Field(2000, ge=1, description="decoded frames sent to embed_clip_arrays")
    max_frame_side: int = Field(4096, ge=8, description="height and width of decoded frames")
    max_top_k: int = Field(100, ge=1)
    caption_max_len: int = Field(30, ge=2, description="tokens per caption, SOT and EOT included")
    caption_beam_size: int = Field(3, ge=1, le=16)
    caption_length_penalty: float = Field(0.6, ge=0)
    caption_min_len: int = Field(0, ge=0, description="tokens a caption has at least (EOT banned until then)")
    caption_no_repeat_ngram: int = Field(
        3, ge=0, description="no n-gram of tokens twice and no token twice in a row in a caption; 0 = off"
    )


def request_limit(limits: ServingLimits) -> int:
    """The largest legitimate request in bytes, as the proxy enforces it: an encoded clip of ``max_media_bytes`` plus
    :data:`REQUEST_OVERHEAD_BYTES` (text requests are far smaller; decoded frames beyond it must be sent encoded)."""
    return limits.max_media_bytes + REQUEST_OVERHEAD_BYTES


class BatchingConfig(StrictModel):
    """Triton's dynamic batching and instance counts (bench/triton_serving.py measured these on 2 cores)."""

    max_batch_size: int = Field(16, ge=1, le=1024)
    max_queue_delay_us: int = Field(0, ge=0, description="0: batch what is queued, never wait for more")
    encoder_instances: int = Field(1, ge=1)
    preprocess_instances: int = Field(1, ge=1)
    handler_instances: int = Field(1, ge=1, description="clip_pool, catalogue_search, caption_decoder")


class ServeConfig(StrictModel):
    """``avlops serve``: a local Triton server on one registered version of a repository."""

    repository: str = "artifacts/registry"
    alias: str | None = Field("champion", description="serve the version this alias points to")
    version: int | None = Field(None, ge=1, description="serve this version instead of an alias")
    host: str = Field("127.0.0.1", description="address every endpoint binds")
    grpc_port: int = Field(8001, ge=0, le=65535, description="0 = a free port")
    http_port: int = Field(8000, ge=0, le=65535)
    metrics_port: int = Field(8002, ge=0, le=65535)
    startup_timeout_s: float = Field(180.0, gt=0)
    health_port: int = Field(
        8003, ge=0, le=65535, description="the supervisor's readiness (inference probes) and liveness endpoint"
    )
    probe_interval_s: float = Field(2.0, gt=0, description="seconds between inference probes of every ensemble")
    probe_timeout_s: float = Field(10.0, gt=0, description="deadline of one probe request")
    heal_after: int = Field(2, ge=1, description="failed probes in a row before the server is restarted")
    max_restarts: int = Field(3, ge=0, description="restarts in a row that never serve before giving up (exit 1)")
    drain_s: float = Field(3.0, ge=0, description="on stop: seconds of readiness false before the server stops")
    stop_grace_s: float = Field(30.0, gt=0, description="on stop: longest wait for in-flight requests")
    poll_seconds: int | None = Field(
        None, ge=1, description="reload changed configs (promotions) every N s (model-control-mode=poll); None = none"
    )

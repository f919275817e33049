"""Config sections of the data stages (``synth``, ``check``, ``versioning`` in ``params.yaml``)."""

from __future__ import annotations

from pydantic import Field

from avlops.config import StrictModel

__all__ = ["CheckConfig", "SynthConfig", "VersioningConfig"]


class SynthConfig(StrictModel):
    """The synthetic tri-modal corpus: moving shapes with tones, noises and spoken words."""

    out: str = "data/synth"
    clips: int = Field(200, ge=1, le=1_000_000)
    seed: int = 0
    seconds: float = Field(3.0, gt=0.5, le=30.0)
    fps: int = Field(8, ge=1, le=60)
    size: int = Field(64, ge=16, le=1024, description="frame width and height in pixels")
    sample_rate: int = Field(16000, ge=8000, le=48000)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    workers: int = Field(0, ge=0, description="worker processes; 0 = one per CPU core")


class CheckConfig(StrictModel):
    """Contract check of a manifest and its media."""

    manifest: str = "data/synth/manifest.jsonl"
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)
    report_dir: str | None = None


class VersioningConfig(StrictModel):
    """Where DVC pushes data: a local folder by default; ``s3://...`` / ``gs://...`` need the dvc-s3 / dvc-gs plugin."""

    remote_name: str = "avlops"
    remote_url: str = ".dvc-storage"

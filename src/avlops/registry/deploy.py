"""Register a blessed checkpoint, serve it on a local Triton server and query it once: the demo's serving step.

:func:`deploy_and_query` builds the catalogue from the training data, registers the checkpoint (refusing it if it is
not blessed or its export disagrees with eager; a checkpoint already registered, same weights, is served from its
version instead of being registered again, so a rerun of the demo adds nothing), optionally publishes the catalogue's
embeddings to Feast, starts
Triton on the new version (free ports on 127.0.0.1 unless ``serve`` says otherwise), runs one text search and one
captioning request over gRPC, stops the server and reports what it got.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from avlops.data.exclusions import read_exclusions
from avlops.features.params import FeaturesConfig
from avlops.fileio import sha256_file
from avlops.registry.params import RegisterConfig
from avlops.registry.store import Registry
from avlops.serving.bundle import CATALOGUE_NAME, WEIGHTS_NAME
from avlops.serving.client import SearchHit, ServingClient
from avlops.serving.contract import CATALOGUE_SEARCH
from avlops.serving.params import ServeConfig
from avlops.serving.server import TritonServer

if TYPE_CHECKING:
    from avlops.serving.catalogue import Catalogue

# Registering and building catalogues need torch; serving and querying do not, so the pipeline's deploy task (a process
# of its own) imports only what serve_and_query uses.

__all__ = ["DeployReport", "QueryClip", "deploy_and_query", "pick_test_clip", "register_or_reuse", "serve_and_query"]


@dataclass(frozen=True)
class DeployReport:
    version: int
    aliases: dict[str, int]
    card: str
    grpc: str
    query: str
    hits: list[SearchHit]
    clip: str
    caption: str
    audio_type: str = "unknown"  # what the caption request told the model about the clip's sound
    seconds: dict[str, float] = field(default_factory=dict)  # register, startup, search, caption
    feast: dict[str, Any] | None = None  # the online lookup after publishing, when asked

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


class QueryClip(NamedTuple):
    """A clip to query a served model with, and what the manifest says of it."""

    clip_id: str
    caption: str  # its first caption: the search query
    media: Path
    audio_type: str  # the manifest's: the caption request passes it, as training and evaluation did


def pick_test_clip(manifest: Path) -> QueryClip | None:
    """The first test clip with a moving video."""
    from avlops.data.manifest import read_manifest
    from avlops.data.schema import Split

    for located in read_manifest(manifest)[0]:
        rec = located.record
        if rec.split is Split.TEST and rec.video and not rec.is_still_image:
            return QueryClip(rec.clip_id, rec.captions[0], manifest.parent / rec.video, rec.audio_type.value)
    return None


def register_or_reuse(
    checkpoint: Path,
    eval_dir: Path,
    data_dir: Path,
    cfg: RegisterConfig,
    *,
    catalogue: Path | None = None,
    lineage: dict[str, Any] | None = None,
) -> tuple[int, Catalogue, bool]:
    """Register ``checkpoint`` unless the registry already holds these weights (whose verdict must still bless them).

    Returns the version, its catalogue, and whether it is new. ``catalogue`` is a built one (else built from
    ``data_dir``, less the clips of ``cfg.quarantine``).
    """
    from avlops.evaluation.checkpoint import resolve_checkpoint
    from avlops.registry.register import check_blessing, register_model
    from avlops.serving.bundle import load_model
    from avlops.serving.catalogue import Catalogue, build_catalogue

    checkpoint = resolve_checkpoint(checkpoint)
    registry = Registry(Path(cfg.repository))
    sha = sha256_file(checkpoint / WEIGHTS_NAME)
    version = registry.find_checkpoint(sha)
    if version is not None:  # registered before: the verdict must still bless it
        check_blessing(eval_dir, checkpoint)
        return version, Catalogue.load(registry.models / CATALOGUE_SEARCH / str(version) / CATALOGUE_NAME), False
    if catalogue is None:
        exclude = read_exclusions(cfg.quarantine)
        built = build_catalogue(load_model(checkpoint), data_dir, checkpoint_sha256=sha, exclude=exclude)
        catalogue = built.save(Path(cfg.repository) / ".catalogue")
    version = register_model(checkpoint, eval_dir, catalogue, cfg, data_dir=data_dir, lineage=lineage).version
    return version, Catalogue.load(catalogue), True


def serve_and_query(
    repository: Path, version: int, clip: QueryClip, *, serve: ServeConfig | None = None, k: int = 5
) -> DeployReport:
    """Serve ``version`` of ``repository`` on a local Triton server, search ``clip.caption``, caption ``clip.media``
    (telling the model ``clip.audio_type``: with ``unknown`` CLIP4VLA's type token is the mixed one), stop."""
    serve = serve or ServeConfig(grpc_port=0, http_port=0, metrics_port=0)
    registry = Registry(repository)
    if version not in registry.versions():
        raise ValueError(f"{repository}: no version {version} (registered: {registry.versions()})")
    seconds: dict[str, float] = {}
    t1 = time.perf_counter()
    with TritonServer(
        registry.models,
        config_name=f"v{version}",
        host=serve.host,
        grpc_port=serve.grpc_port,
        http_port=serve.http_port,
        metrics_port=serve.metrics_port,
        startup_timeout_s=serve.startup_timeout_s,
    ) as server:
        seconds["startup"] = round(time.perf_counter() - t1, 2)
        with ServingClient(server.endpoints.grpc) as client:
            t2 = time.perf_counter()
            hits = client.search(clip.caption, k)
            seconds["search"] = round(time.perf_counter() - t2, 3)
            t3 = time.perf_counter()
            caption = client.caption(clip.media, clip.audio_type)
            seconds["caption"] = round(time.perf_counter() - t3, 3)
        grpc = server.endpoints.grpc
    return DeployReport(
        version=version,
        aliases=registry.aliases(),
        card=str(registry.cards / str(version) / "card.json"),
        grpc=grpc,
        query=clip.caption,
        hits=hits,
        clip=str(clip.media),
        caption=caption.text,
        audio_type=clip.audio_type,
        seconds=seconds,
    )


def deploy_and_query(
    checkpoint: Path,
    eval_dir: Path,
    data_dir: Path,
    clip: QueryClip,
    *,
    cfg: RegisterConfig | None = None,
    serve: ServeConfig | None = None,
    features: FeaturesConfig | None = None,
    k: int = 5,
) -> DeployReport:
    """Register ``checkpoint`` (or a run folder: its newest) into ``cfg.repository`` unless these weights are already
    registered there, serve that version, search ``clip.caption`` and caption ``clip.media``."""
    from avlops.serving.catalogue import publish_catalogue

    cfg = cfg or RegisterConfig()
    t0 = time.perf_counter()
    version, catalogue, _ = register_or_reuse(checkpoint, eval_dir, data_dir, cfg)
    register_s = round(time.perf_counter() - t0, 2)
    feast = publish_catalogue(catalogue, version, features).example if features is not None else None
    report = serve_and_query(Path(cfg.repository), version, clip, serve=serve, k=k)
    return dataclasses.replace(report, seconds={"register": register_s, **report.seconds}, feast=feast)

"""The demo's serving step as one call: register a blessed checkpoint, serve it, search once, caption once."""

from __future__ import annotations

from pathlib import Path

import pytest

from avlops.registry.deploy import QueryClip, deploy_and_query
from avlops.registry.params import RegisterConfig
from avlops.registry.store import Registry
from serving_data import Deployment

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_deploy_and_query(deployment: Deployment, tmp_path: Path) -> None:
    rec = deployment.records[0]
    repository = tmp_path / "registry"
    report = deploy_and_query(
        deployment.checkpoint,
        deployment.eval_dir,
        deployment.data,
        QueryClip(rec["clip_id"], rec["captions"][0], deployment.media(rec["clip_id"]), rec["audio_type"]),
        cfg=RegisterConfig(repository=str(repository)),
        k=3,
    )
    assert report.version == 1 and report.aliases == {"champion": 1, "challenger": 1}
    assert [h.rank for h in report.hits] == [1, 2, 3]
    assert rec["clip_id"] in {h.clip_id for h in report.hits}
    assert report.caption.strip() and report.audio_type == rec["audio_type"] != "unknown"
    assert report.grpc.startswith("127.0.0.1:")
    assert set(report.seconds) == {"register", "startup", "search", "caption"}
    assert Registry(repository).card(1)["catalogue"]["clips"] == 12

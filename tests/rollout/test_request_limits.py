"""Oversized requests are refused at the proxy, before a server buffers them: a real Envoy (the platform's
configuration) in front of a real tiny Triton server. Triton 2.51 has no request-size option and keeps the memory of
every large request it parsed (issue 14: ~25 refused 70 MB clips grew it by 2 GB), so the limit must hold in front
of it: 1,000 oversized requests leave the server's process tree within 10 % of its memory before them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psutil
import pytest
import yaml

from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
from avlops.rollout.envoy import SLOTS, EnvoyProxy, Upstream
from avlops.rollout.platform import version_request_limit
from avlops.serving.client import InvalidInputError, ServingClient
from avlops.serving.params import REQUEST_OVERHEAD_BYTES
from avlops.serving.server import TritonServer, free_port
from serving_data import Deployment

pytestmark = [pytest.mark.triton, pytest.mark.slow]

MAX_MEDIA = 100_000  # the registered version's max_media_bytes: the proxy's limit is this + REQUEST_OVERHEAD_BYTES


@dataclass
class Proxied:
    server: TritonServer
    envoy: EnvoyProxy
    deployment: Deployment

    def tree_rss(self) -> int:
        root = psutil.Process(self.server.process.pid)  # type: ignore[union-attr]
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


@pytest.fixture(scope="module")
def proxied(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    root = tmp_path_factory.mktemp("limits")
    cfg = RegisterConfig.model_validate(
        {"repository": str(root / "registry"), "limits": {"max_media_bytes": MAX_MEDIA}}
    )
    register_model(deployment.checkpoint, deployment.eval_dir, deployment.catalogue, cfg, data_dir=deployment.data)
    limit = version_request_limit(root / "registry", 1)
    assert limit == MAX_MEDIA + REQUEST_OVERHEAD_BYTES
    with TritonServer(root / "registry" / "models", config_name="champion") as server:
        e = server.endpoints
        up = Upstream(e.host, e.grpc_port, e.http_port)  # both slots on the one server
        envoy = EnvoyProxy(root / "envoy", free_port(), free_port(), dict.fromkeys(SLOTS, up), limit)
        envoy.start()
        try:
            yield Proxied(server, envoy, deployment)
        finally:
            envoy.stop()


def test_envoy_config_carries_the_limit(proxied: Proxied) -> None:
    config = yaml.safe_load((proxied.envoy.workdir / "envoy.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    first = hcm["http_filters"][0]
    assert first["name"] == "envoy.filters.http.buffer"
    assert first["typed_config"]["max_request_bytes"] == MAX_MEDIA + REQUEST_OVERHEAD_BYTES


def test_oversized_requests_are_refused_at_the_proxy_and_server_memory_stays_flat(proxied: Proxied) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    d = proxied.deployment
    clip = d.media(d.records[0]["clip_id"])
    text = d.records[0]["captions"][0]
    address = proxied.envoy.address
    with ServingClient(address) as client:
        for _ in range(3):  # warm: the memory a working server holds is the baseline
            assert client.search(text, 3) and client.caption(clip).text
        # under the proxy's limit, over the model's own: the server itself refuses it (INVALID_ARGUMENT)
        with pytest.raises(InvalidInputError, match=f"limit {MAX_MEDIA}"):
            client.caption(b"\0" * (MAX_MEDIA + 1000))
        # over the proxy's limit: refused at Envoy, typed as bad input, with the limit named
        with pytest.raises(InvalidInputError, match="request too large") as err:
            client.caption(b"\0" * (4 * MAX_MEDIA))
        assert err.value.status == "RESOURCE_EXHAUSTED"
    before = proxied.tree_rss()
    media = np.zeros((1, 1_000_000), np.uint8)  # 1 MB: 6x the limit
    g = grpcclient.InferenceServerClient(address)
    h = httpclient.InferenceServerClient(address)
    grpc_media = grpcclient.InferInput("media", list(media.shape), "UINT8")
    grpc_media.set_data_from_numpy(media)
    http_media = httpclient.InferInput("media", list(media.shape), "UINT8")
    http_media.set_data_from_numpy(media, binary_data=True)
    statuses: dict[str, int] = {}
    for i in range(1000):  # alternately gRPC and HTTP
        with pytest.raises(InferenceServerException) as refused:
            if i % 2:
                g.infer("caption", [grpc_media])
            else:
                h.infer("caption", [http_media])
        status = str(refused.value.status())
        statuses[status] = statuses.get(status, 0) + 1
        if "too large" not in str(refused.value.message()):
            pytest.fail(f"request {i}: {status} {refused.value.message()}")
    g.close()
    h.close()
    assert statuses == {"StatusCode.RESOURCE_EXHAUSTED": 500, "413": 500}
    after = proxied.tree_rss()
    assert after <= 1.10 * before, f"the server tree grew from {before >> 20} MB to {after >> 20} MB"
    with ServingClient(address) as client:
        assert client.search(text, 3) and client.caption(clip).text  # and it still serves

"""A real Triton server on a registered tiny model, started by ``avlops serve`` on free ports of 127.0.0.1: served
embeddings equal the library's, search finds known clips, captioning captions, every bad input is refused while the
server keeps serving, and SIGTERM stops it cleanly."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from avlops.cli import main
from avlops.data.schema import ClipRecord
from avlops.evaluation.checkpoint import LoadedModel, load_for_evaluation
from avlops.losses import masked_mean
from avlops.preprocessing.clip import preprocess_arrays, preprocess_clip
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.text import tokenize
from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
from avlops.serving.captioning import generate_from_features
from avlops.serving.client import (
    InvalidInputError,
    ModelNotFoundError,
    ServerUnavailableError,
    ServingClient,
)
from avlops.serving.params import ServingLimits
from avlops.serving.server import free_port
from serving_data import Deployment

pytestmark = [pytest.mark.triton, pytest.mark.slow]

LIMITS = {"max_media_bytes": 2_000_000, "max_media_seconds": 60.0}


@dataclass
class Served:
    deployment: Deployment
    grpc: str
    http: str
    metrics: str
    process: subprocess.Popen[str]
    output: list[str]
    loaded: LoadedModel
    pre: PreprocessConfig

    def client(self, **kwargs: object) -> ServingClient:
        return ServingClient(self.grpc, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def served(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    repository = tmp_path_factory.mktemp("served") / "registry"
    cfg = RegisterConfig.model_validate(
        {"repository": str(repository), "limits": LIMITS, "batching": {"max_batch_size": 8}}
    )
    register_model(deployment.checkpoint, deployment.eval_dir, deployment.catalogue, cfg, data_dir=deployment.data)
    ports = [str(free_port()) for _ in range(4)]
    cmd = [
        sys.executable,
        "-m",
        "avlops",
        "serve",
        "--repository",
        str(repository),
        "--grpc-port",
        ports[0],
        "--http-port",
        ports[1],
        "--metrics-port",
        ports[2],
        "--health-port",
        ports[3],
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("serving version"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(240):
            raise AssertionError("avlops serve did not become ready:\n" + "".join(output))
        from avlops.preprocessing.shards import read_index

        pre = PreprocessConfig.model_validate(read_index(deployment.data)["config"])
        yield Served(
            deployment,
            f"127.0.0.1:{ports[0]}",
            f"127.0.0.1:{ports[1]}",
            f"http://127.0.0.1:{ports[2]}/metrics",
            process,
            output,
            load_for_evaluation(deployment.checkpoint, device="cpu"),
            pre,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()


def _wav(seconds: float, rate: int = 1000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), dtype=np.int16).tobytes())
    return buf.getvalue()


def test_the_server_reports_what_it_serves(served: Served) -> None:
    line = next(x for x in served.output if x.startswith("serving version"))
    assert "gRPC 127.0.0.1:" in line and "HTTP 127.0.0.1:" in line
    with served.client() as client:
        assert client.is_ready()
        assert client.served_version("search") == {"version": "1", "alias": "champion"}


def test_served_text_embeddings_equal_the_library(served: Served) -> None:
    texts = [r["captions"][0] for r in served.deployment.records[:5]]
    with served.client() as client:
        got = client.embed_text(texts)
    with torch.inference_mode():
        want = served.loaded.model.encode_text(tokenize(texts, 16).tokens)
    np.testing.assert_allclose(got.embedding, want.pooled.numpy(), atol=1e-4, rtol=1e-4)
    mask = want.token_mask.numpy()
    np.testing.assert_array_equal(got.token_mask, mask)
    np.testing.assert_allclose(got.token_feats[mask], want.token_feats.numpy()[mask], atol=1e-4, rtol=1e-4)


def test_served_clip_embeddings_equal_the_library(served: Served) -> None:
    d, model = served.deployment, served.loaded.model
    rec = d.records[2]
    clip = preprocess_clip(ClipRecord.model_validate(rec), d.manifest.parent, served.pre, train=False, rng=None)
    from avlops.models.vla import audio_type_weight

    with torch.inference_mode():
        video = model.encode_video(clip.video.pixels[None])[0]
        audio = model.encode_audio(clip.audio.fbank[None], torch.tensor([audio_type_weight(rec["audio_type"])]))[0]
    with served.client() as client:
        got = client.embed_clip(d.media(rec["clip_id"]), rec["audio_type"])
        frames = np.stack([np.full((20, 24, 3), 40 * i, np.uint8) for i in range(5)])
        sound = (0.2 * np.sin(np.arange(16000) / 7)).astype(np.float32)
        arrays = client.embed_clip_arrays(frames, sound, 16000, "nonverbal")
    np.testing.assert_allclose(got.video_feats, video.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got.audio_feats, audio.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got.tv, masked_mean(video[None], clip.video.mask[None])[0].numpy(), atol=1e-4)
    both = torch.cat([video, audio])[None]
    mask = torch.cat([clip.video.mask, clip.audio.mask])[None]
    np.testing.assert_allclose(got.tav, masked_mean(both, mask)[0].numpy(), atol=1e-4)

    t = preprocess_arrays(served.pre, frames=frames, waveform=sound, sample_rate=16000)
    with torch.inference_mode():
        v = model.encode_video(t["video"][None].float())[0]
        a = model.encode_audio(t["audio"][None].float(), torch.tensor([1.0]))[0]
    np.testing.assert_allclose(arrays.video_feats, v.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(arrays.audio_feats, a.numpy(), atol=1e-4, rtol=1e-4)


def test_search_returns_the_clip_a_known_caption_describes(served: Served) -> None:
    records = served.deployment.records
    with served.client() as client:
        captions = [r["captions"][0] for r in records]
        results = [hits for i in range(0, len(captions), 6) for hits in client.search_many(captions[i : i + 6], k=3)]
        one = client.search(records[0]["captions"][1], k=3)
    assert [h.rank for h in one] == [1, 2, 3] and one[0].score >= one[1].score >= one[2].score
    top1 = [hits[0].clip_id == r["clip_id"] for hits, r in zip(results, records, strict=True)]
    top3 = [r["clip_id"] in {h.clip_id for h in hits} for hits, r in zip(results, records, strict=True)]
    assert sum(top1) >= 0.75 * len(records), [
        (r["clip_id"], [h.clip_id for h in hits]) for hits, r in zip(results, records, strict=True)
    ]
    assert sum(top3) >= 0.9 * len(records)


def test_captioning_returns_the_library_caption(served: Served) -> None:
    d, loaded = served.deployment, served.loaded
    rec = d.records[3]
    with served.client() as client:
        caption = client.caption(d.media(rec["clip_id"]), rec["audio_type"])
        embedded = client.embed_clip(d.media(rec["clip_id"]), rec["audio_type"])
    assert caption.text.strip() and caption.tokens[0] == 49406 and caption.tokens[-1] == 49407
    feats = [
        torch.from_numpy(x[None].copy())
        for x in (embedded.video_feats, embedded.video_mask, embedded.audio_feats, embedded.audio_mask)
    ]
    want = generate_from_features(loaded.model, *feats, loaded.objective, ServingLimits(caption_max_len=16))
    assert caption.tokens == want[0].tolist()


def _raw(served: Served, model: str, inputs: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(served.grpc)
    request = []
    for name, array in inputs.items():
        x = grpcclient.InferInput(name, list(array.shape), dtypes[name])
        x.set_data_from_numpy(array)
        request.append(x)
    client.infer(model, request)


def test_bad_requests_are_refused_and_the_server_keeps_serving(served: Served, tmp_path: Path) -> None:
    from tritonclient.utils import InferenceServerException

    d = served.deployment
    good_text = d.records[0]["captions"][0]
    clip = d.media(d.records[0]["clip_id"])
    with served.client() as client:

        def still_serving() -> None:
            assert client.search(good_text, k=1)[0].clip_id

        with pytest.raises(InferenceServerException, match="data-type is 'INT32'") as err:  # wrong dtype
            _raw(
                served,
                "search",
                {"text": np.array([[1, 2]], np.int32), "top_k": np.array([[1]], np.int32)},
                {"text": "INT32", "top_k": "INT32"},
            )
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        still_serving()
        with pytest.raises(InferenceServerException, match="unexpected shape") as err:  # wrong shape
            _raw(
                served,
                "search",
                {"text": np.array([[65]], np.uint8), "top_k": np.array([[1, 2]], np.int32)},
                {"text": "UINT8", "top_k": "INT32"},
            )
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        still_serving()
        with pytest.raises(InferenceServerException, match="text is empty") as err:  # zero-width text [1, 0]
            _raw(
                served,
                "search",
                {"text": np.zeros((1, 0), np.uint8), "top_k": np.array([[1]], np.int32)},
                {"text": "UINT8", "top_k": "INT32"},
            )
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        still_serving()
        for bad, message in (("", "text is empty"), (" \t ", "text is empty"), ("x" * 1001, "1001 characters")):
            with pytest.raises(InvalidInputError, match=message):
                client.search(bad)
            still_serving()
        with pytest.raises(InvalidInputError, match="top_k must be in"):
            client.search(good_text, k=1000)
        with pytest.raises(InvalidInputError, match="batch-size must be <= 8"):  # oversized request
            client.search_many([good_text] * 9, k=1)
        with pytest.raises(InvalidInputError, match=r"600\.0 s"):  # a 10-minute audio clip
            client.embed_clip(_wav(600.0))
        with pytest.raises(InvalidInputError, match="cannot be decoded"):  # an undecodable video
            client.caption(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
        truncated = clip.read_bytes()[:2000]
        with pytest.raises(InvalidInputError, match="cannot"):
            client.caption(truncated)
        with pytest.raises(InvalidInputError, match="bytes \\(limit 2000000\\)"):  # an oversized upload
            client.caption(b"\0" * 2_000_001)
        with pytest.raises(InvalidInputError, match="unknown audio type"):
            client.caption(clip, audio_type="music")
        still_serving()
    with ServingClient(served.grpc, version="7") as pinned, pytest.raises(ModelNotFoundError, match="version 7"):
        pinned.search(good_text)
    with served.client() as client:
        with pytest.raises(ModelNotFoundError, match="no_such_model"):
            client.infer("no_such_model", {"text": np.array([[65]], np.uint8)}, ["tokens"])
        assert client.caption(clip).text  # and captioning still works


def test_bad_and_good_clients_at_once(served: Served) -> None:
    text = served.deployment.records[1]["captions"][0]

    def call(i: int) -> str:
        with served.client() as client:
            try:
                return client.search("" if i % 2 else text, k=1)[0].clip_id
            except InvalidInputError:
                return "refused"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(16)))
    assert results[1::2] == ["refused"] * 8
    assert len(set(results[::2])) == 1 and results[0] != "refused"


def test_http_client_and_metrics(served: Served) -> None:
    import urllib.request

    text = served.deployment.records[4]["captions"][0]
    with served.client() as g, ServingClient(served.http, protocol="http") as h:
        assert [x.clip_id for x in h.search(text, 3)] == [x.clip_id for x in g.search(text, 3)]
        with pytest.raises(InvalidInputError, match="text is empty"):
            h.search("")
        assert h.served_version("caption")["version"] == "1"
    metrics = urllib.request.urlopen(served.metrics, timeout=10).read().decode()
    assert 'nv_inference_request_success{model="search",version="1"}' in metrics


def test_client_commands(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    d = served.deployment
    rec = d.records[5]
    assert main(["client", "search", rec["captions"][0], "-k", "2", "--url", served.grpc, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2] and all(h["clip_id"].startswith("syn-") for h in hits)
    assert main(["client", "caption", str(d.media(rec["clip_id"])), "--url", served.grpc]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["client", "embed", "--text", "a red circle", "--url", served.grpc, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["embedding"][0]) == 32
    assert main(["client", "search", "", "--url", served.grpc]) == 2
    assert "text is empty" in capsys.readouterr().err


def test_client_retries_then_reports_an_unavailable_server() -> None:
    t0 = time.perf_counter()
    with (
        ServingClient(f"127.0.0.1:{free_port()}", retries=2, backoff_s=0.05, timeout_s=2) as client,
        pytest.raises(ServerUnavailableError),
    ):
        client.search("anything")
    assert 0.15 <= time.perf_counter() - t0 < 10  # 0.05 + 0.1 s of backoff between three attempts


def test_only_the_models_that_need_torch_load_it(served: Served) -> None:
    """torch costs a model process ~0.55 GB: text preprocessing, the encoders, pooling and search run without it, and
    encoded and decoded clips share one preprocessing process."""
    import psutil

    loaded = {}
    for p in psutil.Process(served.process.pid).children(recursive=True):
        if p.name() != "triton_python_backend_stub":
            continue
        model = Path(p.cmdline()[1]).parents[1].name  # the first argument: <repository>/<model>/<version>/model.py
        loaded[model] = any("libtorch_cpu" in m.path for m in p.memory_maps(grouped=True))
    assert loaded and {m for m, has_torch in loaded.items() if has_torch} == {"clip_preprocess", "caption_decoder"}, (
        loaded
    )


def test_sigterm_stops_the_server_cleanly(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(90) == 0
    time.sleep(0.2)
    text = "".join(served.output)
    assert "draining" in text and "stopped (tritonserver exit code 0)" in text
    with ServingClient(served.grpc, retries=0, timeout_s=2) as client, pytest.raises(ServerUnavailableError):
        client.search("anything")


def test_readiness_probe_is_false_until_something_listens() -> None:
    """``TritonServer.start`` polls with a new connection each time, so a server that starts listening late is seen
    at the next poll (a client made before it listened would sit in gRPC's reconnect back-off)."""
    import socket

    from avlops.serving.server import http_ready

    port = free_port()
    assert not http_ready("127.0.0.1", port)  # refused: nothing listens
    with socket.socket() as s:  # listens but never answers HTTP: not ready, within the probe's timeout
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not http_ready("127.0.0.1", port, timeout_s=0.2)

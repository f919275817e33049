"""Rollouts on the real local platform: two tiny Triton servers behind a real Envoy, a real Prometheus and
Pushgateway, the controller driven through ``avlops rollout``, under continuous gRPC load through Envoy.

One platform for the module (at most two Triton servers at a time): a healthy canary is promoted even though its
controller is killed mid-analysis and resumed; then a canary that fails a share of requests (Envoy's fault
injection on its slot) is rolled back; then a canary whose server is killed mid-rollout is drained and aborted.
Requests are counted throughout: none fails on the stable track.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from avlops.cli import main
from avlops.monitoring.prometheus import PrometheusClient
from avlops.monitoring.report import dashboard_panels
from avlops.registry.params import RegisterConfig
from avlops.registry.register import register_model
from avlops.registry.store import Registry
from avlops.rollout.controller import Controller, RolloutState
from avlops.rollout.platform import Platform, down, load
from avlops.serving.client import PermissionDeniedError, ServingClient, ServingError
from avlops.serving.server import SHM_DIR, owner_tag, server_processes
from serving_data import Deployment

pytestmark = [pytest.mark.triton, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "dashboards" / "avlops-rollout.json"

SPEC = {
    "name": "test",
    "strategy": {
        "canary": {
            "steps": [
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "health"}, {"templateName": "quality"}]}},
            ]
        }
    },
    "analysisTemplates": [
        {
            "name": "health",
            "args": [{"name": "canary-cluster"}],
            "metrics": [
                {
                    "name": "error-ratio",
                    "initialDelay": "6s",
                    "interval": "3s",
                    "count": 4,
                    "failureLimit": 0,
                    "inconclusiveLimit": 3,
                    "successCondition": "result[0] <= 0.05",
                    "failureCondition": "result[0] > 0.05",
                    "provider": {
                        "prometheus": {"query": 'max(avlops:grpc_error_ratio:rate30s{slot="{{args.canary-cluster}}"})'}
                    },
                }
            ],
        },
        {
            "name": "quality",
            "args": [{"name": "canary-version"}, {"name": "stable-version"}],
            "metrics": [
                {
                    "name": "embedding-agreement",
                    "initialDelay": "3s",
                    "interval": "3s",
                    "count": 2,
                    "inconclusiveLimit": 4,
                    "successCondition": "result[0] >= 0.9",
                    "failureCondition": "result[0] < 0.9",
                    "provider": {
                        "prometheus": {
                            "query": 'min(avlops_probe_embedding_agreement{canary_version="{{args.canary-version}}",'
                            ' stable_version="{{args.stable-version}}"})'
                        }
                    },
                }
            ],
        },
    ],
}


@dataclass
class Load:
    """gRPC searches through Envoy in a loop; every outcome is counted."""

    address: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with ServingClient(self.address, retries=0, timeout_s=10) as client:
            while not self._stop.is_set():
                try:
                    client.search("a red circle moves left", 3)
                    self.ok += 1
                except ServingError as err:
                    self.failed.append(f"{err.status}: {err}")
                time.sleep(0.01)

    def stop(self) -> Load:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)
        return self


@dataclass
class World:
    workdir: Path
    registry: Path
    spec: Path
    manifest: Path

    def platform(self) -> Platform:
        return load(self.workdir)

    def state(self) -> RolloutState | None:
        return Controller(self.workdir).state()

    def cli(self, *args: str) -> int:
        return main(["rollout", *args, "--workdir", str(self.workdir)])

    def wait(self, what: str, check: Callable[[RolloutState], bool], timeout_s: float = 240) -> RolloutState:
        """Wait on the rollout's progress (its state file), never a fixed sleep."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            if state is not None and check(state):
                return state
            if time.monotonic() > deadline:
                summary = json.dumps(state.model_dump(mode="json") if state else None, indent=1)[-3000:]
                pytest.fail(f"timed out waiting for {what}: {summary}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def world(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("rollout")
    registry = root / "registry"
    cfg = RegisterConfig.model_validate({"repository": str(registry)})
    for _ in range(4):  # versions 1 (champion) to 4: the same healthy weights
        register_model(deployment.checkpoint, deployment.eval_dir, deployment.catalogue, cfg, data_dir=deployment.data)
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    w = World(root / "platform", registry, spec, deployment.manifest)
    assert main(["rollout", "up", "--repository", str(registry), "--workdir", str(w.workdir)]) == 0
    try:
        yield w
    finally:
        controller = w.workdir / "rollout" / "controller.pid"
        if controller.exists():
            from avlops.rollout.daemon import Daemon

            Daemon(w.workdir / "rollout", "controller").stop()
        down(w.workdir)
        shutil.rmtree(w.workdir / "tsdb", ignore_errors=True)


def _metrics(admin: str) -> str:
    with urllib.request.urlopen(f"{admin}/stats/prometheus", timeout=5) as r:
        return str(r.read().decode())


def test_platform_serves_through_one_address_and_binds_loopback(world: World) -> None:
    p = world.platform()
    assert p.versions == {"blue": 1} and p.tracks == {"blue": "stable"}
    with ServingClient(p.address) as grpc_client, ServingClient(p.address, protocol="http") as http_client:
        assert grpc_client.search("a red circle", 3)
        assert http_client.search("a red circle", 3)
    envoy = yaml.safe_load((world.workdir / "envoy.yaml").read_text())
    assert envoy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert p.envoy().weights() == {"blue": 100, "green": 0}


def test_the_public_endpoint_is_an_allowlist_of_the_ensembles_health_and_metadata(world: World) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    p = world.platform()
    health = p.slots["blue"].health
    with urllib.request.urlopen(f"http://127.0.0.1:{health}/status", timeout=5) as r:
        assert json.loads(r.read())["ready"] is True  # the slot is an avlops serve supervisor, probes passing
    with ServingClient(p.address) as client:
        assert client.search("a red circle", 3) and client.is_ready()
        with pytest.raises(PermissionDeniedError):  # an internal model
            client.infer("text_preprocess", {"text": np.array([[65, 66]], np.uint8)}, ["tokens"])
        with pytest.raises(PermissionDeniedError):  # every model's configuration
            client.served_version("search")
    raw = grpcclient.InferenceServerClient(p.address)
    assert raw.is_server_live() and raw.is_model_ready("search")
    assert raw.get_model_metadata("caption").name == "caption"
    denied = [
        lambda: raw.register_system_shared_memory("x", "/anything", 64),
        lambda: raw.get_model_repository_index(),
        lambda: raw.get_inference_statistics(),
        lambda: raw.get_model_metadata("text_encoder"),
        lambda: raw.update_log_settings({"log_verbose_level": 1}),
    ]
    for call in denied:
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == "StatusCode.PERMISSION_DENIED", err.value
    raw.close()

    def http(path: str, data: bytes | None = None) -> int:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(f"http://{p.address}{path}", data=data), timeout=10
            ) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert [http(x) for x in ("/v2/health/ready", "/v2", "/v2/models/search", "/v2/models/search/ready")] == [200] * 4
    for path, data in (
        ("/v2/models/text_preprocess/infer", b"{}"),
        ("/v2/models/search/config", None),
        ("/v2/systemsharedmemory/region/x/register", b'{"key": "/x", "offset": 0, "byte_size": 8}'),
        ("/v2/repository/index", b"{}"),
        ("/v2/models/stats", None),
    ):
        assert http(path, data) == 403, path


def test_refusals_start_nothing(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert world.cli("start", "9", "--spec", str(world.spec)) == 1
    assert "no version 9" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "strategy": {"canary": {"steps": [{"setWeight": 150}]}}}))
    assert world.cli("start", "2", "--spec", str(bad)) == 2
    assert "strategy.canary.steps.0.setWeight" in capsys.readouterr().err
    unblessed = Registry(world.registry)
    card = unblessed.cards / "3" / "card.json"
    original = card.read_text()
    data = json.loads(original)
    data["evaluation"]["blessing"]["blessed"] = False
    card.write_text(json.dumps(data))
    try:
        assert world.cli("start", "3", "--spec", str(world.spec)) == 1
        assert "not blessed" in capsys.readouterr().err
    finally:
        card.write_text(original)
    assert world.state() is None
    assert world.platform().versions == {"blue": 1}


def test_a_healthy_canary_is_promoted_even_when_its_controller_is_killed_and_resumed(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    load_ = Load(world.platform().address).start()
    try:
        assert world.cli("start", "2", "--spec", str(world.spec), "--golden", str(world.manifest), "--detach") == 0
        # a second rollout while this one runs is refused
        assert world.cli("start", "3", "--spec", str(world.spec)) == 1
        assert "promote or abort it first" in capsys.readouterr().err
        world.wait(
            "the analysis's first measurements", lambda s: any(m.measurements for r in s.runs for m in r.metrics)
        )
        from avlops.rollout.daemon import Daemon

        controller = Daemon(world.workdir / "rollout", "controller")
        assert controller.signal(signal.SIGKILL)
        while controller.pid() is not None:
            time.sleep(0.05)
        killed_at = world.state()
        assert killed_at is not None and killed_at.phase.value == "Progressing"
        assert world.cli("status") == 0
        assert "controller not running" in capsys.readouterr().out
        assert world.cli("resume", "--golden", str(world.manifest), "--detach") == 0
        state = world.wait("the promotion", lambda s: s.phase.value in ("Promoted", "Aborted", "Paused"), 300)
    finally:
        load_.stop()
    assert state.phase.value == "Promoted", state.model_dump_json(indent=1)
    # the resumed controller went on with the same analysis run, not a new one
    assert len(state.runs) == 2
    assert all(r.phase.value == "Successful" for r in state.runs)
    p = world.platform()
    assert p.versions == {"green": 2} and p.tracks == {"green": "stable"}
    assert p.server("blue").pid() is None
    assert Registry(world.registry).aliases()["champion"] == 2
    assert p.envoy().weights()["green"] == 100
    assert load_.ok > 50
    assert load_.failed == []
    stats = _metrics(p.envoy().admin)
    assert (
        'envoy_cluster_grpc_ModelInfer_total{envoy_grpc_bridge_method="GRPCInferenceService",envoy_grpc_bridge_service="inference",envoy_cluster_name="green"}'
        in stats
    )
    assert world.cli("history") == 0
    assert "version 2 over 1  Promoted" in capsys.readouterr().out
    # the dashboard's expressions have data from this rollout, and the report plots them
    client = PrometheusClient(p.prometheus_url)
    with_data = {panel.title for panel in dashboard_panels(DASHBOARD) if client.query(panel.expr)}
    assert {"Traffic share by track", "gRPC error ratio by track", "Latency p99 by track (Envoy)"} <= with_data
    out = world.workdir.parent / "report"
    assert main(["monitor", "report", "--workdir", str(world.workdir), "--out", str(out)]) == 0
    assert (out / "verdicts.png").read_bytes().startswith(b"\x89PNG")
    assert len(list(out.glob("*.png"))) == len(dashboard_panels(DASHBOARD)) + 1


def test_a_canary_failing_a_share_of_requests_is_rolled_back(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    load_ = Load(world.platform().address).start()
    try:
        assert world.cli("start", "3", "--spec", str(world.spec), "--golden", str(world.manifest), "--detach") == 0
        state = world.wait("the canary's weight", lambda s: s.weight == 50)
        world.platform().envoy().inject_fault(state.canary_slot, abort_percent=30)
        state = world.wait("the decision", lambda s: s.phase.value in ("Promoted", "Aborted", "Paused"))
    finally:
        load_.stop()
        world.platform().envoy().inject_fault("blue", abort_percent=0)
    assert state.phase.value == "Aborted", state.model_dump_json(indent=1)
    assert any("error-ratio Failed" in r for r in state.reasons)
    p = world.platform()
    assert p.versions == {"green": 2}
    assert p.envoy().weights() == {"blue": 0, "green": 100}
    status = Registry(world.registry).status(3)
    assert status["status"] == "failed" and "error-ratio" in status["reasons"][0]
    assert Registry(world.registry).aliases()["champion"] == 2
    # only the canary's injected failures: about 30 % of its half of the traffic, during the analysis only
    assert load_.failed and all("INTERNAL" in f for f in load_.failed)
    assert len(load_.failed) < 0.3 * (load_.ok + len(load_.failed))
    assert world.cli("start", "3", "--spec", str(world.spec)) == 1
    assert "failed a rollout before" in capsys.readouterr().err


def test_a_killed_canary_is_drained_and_the_rollout_aborted(world: World) -> None:
    load_ = Load(world.platform().address).start()
    try:
        registry = Registry(world.registry)
        stable = set(world.platform().versions.values())
        version = next(v for v in registry.versions() if v not in stable and not registry.status(v))
        assert world.cli("start", str(version), "--spec", str(world.spec), "--detach") == 0
        state = world.wait("the canary's weight", lambda s: s.weight == 50)
        ok_before = load_.ok
        canary = world.platform().server(state.canary_slot)
        supervisor = canary.pid()
        assert supervisor is not None
        stubs = [p for p in server_processes(supervisor) if b"python_backend_stub" in _cmdline(p)]
        assert stubs, "the canary's server runs python-backend stubs"
        for pid in stubs:  # stubs that miss their server's death (as a stuck one does) must not outlive the slot
            os.kill(pid, signal.SIGSTOP)
        canary.signal(signal.SIGKILL)
        state = world.wait("the abort", lambda s: s.phase.value in ("Promoted", "Aborted"))
        while load_.ok < ok_before + 20:  # the stable keeps serving everything afterwards
            time.sleep(0.05)
    finally:
        load_.stop()
    assert state.phase.value == "Aborted"
    assert any("exited" in r for r in state.reasons)
    assert world.platform().versions == {world.platform().slot_of("stable"): next(iter(stable))}
    # nothing of the killed server is left: no Triton, no stub, no python-backend region
    assert server_processes(supervisor) == []
    assert not list(SHM_DIR.glob(f"{owner_tag(supervisor)}*"))
    assert registry.status(version)["status"] == "failed"
    # the slot's cluster fails over to the other server, and retries of dropped requests go there too
    assert load_.failed == []


def test_envoy_dying_mid_rollout_is_restarted_with_the_rollouts_weights_and_a_paused_rollout_aborted(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = tmp_path / "held.yaml"
    held.write_text(yaml.safe_dump({"strategy": {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}}))
    registry = Registry(world.registry)
    stable = set(world.platform().versions.values())
    version = next(v for v in registry.versions() if v not in stable and not registry.status(v))
    assert world.cli("start", str(version), "--spec", str(held), "--detach") == 0
    state = world.wait("the pause", lambda s: s.phase.value == "Paused")
    envoy = world.platform().envoy()
    assert envoy.weights()[state.canary_slot] == 30
    assert envoy.daemon.signal(signal.SIGKILL)
    state = world.wait("Envoy's restart", lambda s: any("Envoy was not running" in e.text for e in s.events))
    assert envoy.running()
    assert envoy.weights() == {state.canary_slot: 30, state.stable_slot: 70}
    with ServingClient(world.platform().address) as client:
        assert client.search("a red circle", 3)
    assert world.cli("abort") == 0
    state = world.wait("the abort", lambda s: s.phase.value == "Aborted")
    assert state.reasons == ["aborted by request"]
    assert envoy.weights()[state.canary_slot] == 0
    assert registry.status(version)["reasons"] == ["aborted by request"]


def test_the_pipeline_deploy_step_starts_a_rollout_of_the_version_it_registered(
    world: World, deployment: Deployment, tmp_path: Path
) -> None:
    """The KFP ``deploy`` component in rollout mode (its Python function, as the pipeline calls it) on this real
    platform: it starts a real rollout and returns its id and phase; a retry reports the same rollout; no platform,
    another registry, another version's rollout under way and a failed version are refused with what to do; the
    kubernetes target renders the Argo Rollout update, which validates offline."""
    from kfp import dsl

    from avlops.flow.steps import StepFailed
    from components.deploy import deploy
    from k8s_manifests import validate_overlay

    held = tmp_path / "held.yaml"
    held.write_text(yaml.safe_dump({"strategy": {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}}))
    cfg = RegisterConfig.model_validate({"repository": str(world.registry)})
    version = register_model(
        deployment.checkpoint, deployment.eval_dir, deployment.catalogue, cfg, data_dir=deployment.data
    ).version
    dataset = dsl.Dataset(name="dataset", uri=str(deployment.manifest.parent), metadata={})
    calls = iter(range(100))

    def hand_off(v: int, config: dict[str, object], repository: Path = world.registry) -> tuple[str, str, str, Path]:
        n = next(calls)
        answers = dsl.Markdown(name="answers", uri=str(tmp_path / f"answers-{n}"), metadata={})
        manifests = dsl.Artifact(name="manifests", uri=str(tmp_path / f"manifests-{n}"), metadata={})
        out = deploy.python_func(
            repository=str(repository), version=v, dataset=dataset, config=config, workspace="", answers=answers,
            manifests=manifests,
        )  # fmt: skip
        assert answers.metadata["rollout_id"] == out[1] and answers.metadata["rollout_phase"] == out[2]
        return out[0], out[1], Path(answers.path).read_text(), Path(manifests.path)

    rollout = {"mode": "rollout", "workdir": str(world.workdir), "spec": str(held)}
    with pytest.raises(StepFailed, match=r"no rollout platform is up in .*: start one .*avlops rollout up --repo"):
        hand_off(version, {**rollout, "workdir": str(tmp_path / "nothing")})
    with pytest.raises(StepFailed, match=r"serves registry .* but the pipeline registered version"):
        hand_off(version, rollout, repository=tmp_path / "other-registry")
    assert world.state() is not None and world.state().version != version  # type: ignore[union-attr]

    caption, rollout_id, page, manifests = hand_off(version, rollout)
    state = world.state()
    assert state is not None and state.id == rollout_id and state.version == version
    assert caption == "" and f"Rollout `{rollout_id}`" in page and "**Progressing**" in page
    assert "golden-query probe" in page and str(deployment.manifest) in page
    docs = validate_overlay(manifests / "overlays" / "cpu")  # what a cluster would apply for the same hand-off
    (argo,) = [d for d in docs if d["kind"] == "Rollout"]
    assert argo["spec"]["template"]["spec"]["containers"][0]["image"] == f"avlops-triton:cpu-v{version}"
    assert argo["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 30}, {"pause": {}}]
    state = world.wait("the canary at 30 % (a real rollout, run by a controller in the background)",
                       lambda s: s.phase.value == "Paused")  # fmt: skip
    assert world.platform().envoy().weights()[state.canary_slot] == 30
    assert world.platform().versions[state.canary_slot] == version

    # a retried hand-off reports the rollout it started; another version's hand-off is refused while it runs
    assert hand_off(version, rollout)[1] == rollout_id
    with pytest.raises(StepFailed, match=rf"no rollout of version 3 started: rollout {rollout_id} of version "
                       rf"{version} is Paused: promote or abort it first"):  # fmt: skip
        hand_off(3, rollout)
    stable = state.stable_version
    _, none, page, _ = hand_off(stable, rollout)
    assert none == "" and "already serves" in page

    # on a cluster: the Argo Rollout update to the version over the champion, rendered (nothing is applied)
    _, none, page, manifests = hand_off(version, {**rollout, "target": "kubernetes"})
    assert none == "" and f"over stable version {stable}" in page and "kubectl apply -k" in page
    validate_overlay(manifests / "overlays" / "gpu")

    assert world.cli("abort") == 0
    world.wait("the abort", lambda s: s.phase.value == "Aborted")
    with pytest.raises(StepFailed, match=rf"version {version} failed a rollout before: aborted by request"):
        hand_off(version, rollout)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""

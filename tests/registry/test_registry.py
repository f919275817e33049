"""Registration: the blessing gate, export parity, atomic publication, model cards and aliases."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import avlops.registry.register as register_module
import avlops.registry.store as store_module
from avlops.cli import main
from avlops.models.vla import VLAModel
from avlops.registry.register import Registration, RegistrationRefused
from avlops.registry.store import Registry, RegistryError
from avlops.serving.bundle import load_model
from avlops.serving.catalogue import Catalogue
from avlops.serving.contract import SEARCH, TEXT_ENCODER, repository_models
from avlops.serving.model_repository import parse_config
from serving_data import Deployment, write_verdict_for

Register = Callable[..., Registration]


def _served_version(path: Path) -> int:
    cfg = parse_config(path.read_text())
    (version,) = cfg.version_policy.specific.versions
    return int(version)


def test_first_version_is_champion_and_published_completely(register: Register, tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  preprocess:\n    cmd: avlops preprocess\n    outs:\n    - path: data\n"
        "      md5: 0123abcd.dir\n"
    )
    result = register(project_root=tmp_path)
    repo = Registry(Path(result.repository))
    assert result.version == 1 and result.aliases == {"challenger": 1, "champion": 1}
    assert all(p["passed"] for p in result.parity) and {p["model"] for p in result.parity} == {
        "text_encoder",
        "video_encoder",
        "audio_encoder",
        "caption_decoder",
    }
    names = repo.model_names(1)
    assert names == [m.name for m in repository_models(_sizes(repo))]
    for name in names:
        for config in ("config.pbtxt", "configs/v1.pbtxt", "configs/champion.pbtxt", "configs/challenger.pbtxt"):
            assert _served_version(repo.models / name / config) == 1
            assert _served_version(repo.gpu / name / config) == 1
        assert (repo.gpu / name / "1").resolve() == (repo.models / name / "1").resolve()
    v1 = repo.models / TEXT_ENCODER / "1"
    assert {p.name for p in v1.iterdir()} == {"model.py", "serving.json", "model.onnx"}
    assert (repo.models / "catalogue_search" / "1" / "catalogue.safetensors").is_file()
    assert not list((repo.root / ".staging").iterdir())

    card = repo.card(1)
    assert repo.find_checkpoint(card["checkpoint"]["sha256"]) == 1 and repo.find_checkpoint("0" * 64) is None
    assert card["evaluation"]["blessing"]["blessed"] is True
    assert card["evaluation"]["metrics"] == {"metrics": {"retrieval/t2av/R@1": 50.0}}
    assert card["checkpoint"]["step"] is not None and len(card["checkpoint"]["sha256"]) == 64
    assert card["data"]["outs"] == {"data": "0123abcd.dir"} and card["data"]["version"]
    assert card["serving"]["search_similarity"] == "fine"  # the model was trained with fine similarity
    assert card["catalogue"]["clips"] == 12 and card["public_models"] == [
        "embed_text",
        "embed_clip",
        "embed_clip_arrays",
        "search",
        "caption",
    ]
    assert card["objective"]["similarity"] == "fine"


def _sizes(repo: Registry) -> object:
    from avlops.serving.bundle import ServingBundle

    return ServingBundle.read(repo.models / SEARCH.replace("search", "text_encoder") / "1").sizes


def test_aliases_move_versions_and_relabel_their_configs(
    register: Register, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register()
    second = register(alias="challenger")
    repo = Registry(Path(second.repository))
    assert second.version == 2 and repo.aliases() == {"champion": 1, "challenger": 2}
    assert _served_version(repo.models / SEARCH / "config.pbtxt") == 1
    challenger = parse_config((repo.models / SEARCH / "configs" / "challenger.pbtxt").read_text())
    assert {s.model_version for s in challenger.ensemble_scheduling.step} == {2}
    assert challenger.parameters["avlops.alias"].string_value == "challenger"

    args = ["--repository", str(repo.root)]
    assert main(["registry", "promote", "challenger", *args]) == 0
    assert repo.aliases() == {"champion": 2, "challenger": 2}
    champion = parse_config((repo.models / SEARCH / "config.pbtxt").read_text())
    assert champion.parameters["avlops.alias"].string_value == "champion"
    assert _served_version(repo.gpu / TEXT_ENCODER / "config.pbtxt") == 2
    assert main(["registry", "promote", "7", *args]) == 1
    assert main(["registry", "promote", "1", "--alias", "v3", *args]) == 1  # would shadow version configs
    capsys.readouterr()

    assert main(["registry", "list", *args]) == 0
    listing = capsys.readouterr().out
    assert "champion,challenger" in listing.replace("challenger,champion", "champion,challenger")
    assert main(["registry", "show", "champion", *args]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2


def test_refused_without_a_blessing(register: Register, deployment: Deployment, tmp_path: Path) -> None:
    repository = tmp_path / "registry"
    with pytest.raises(RegistrationRefused, match="blessing verdict not found"):
        register(repository, eval_dir=tmp_path / "no-eval")
    unblessed = tmp_path / "unblessed"
    write_verdict_for(unblessed, deployment.checkpoint, blessed=False)
    with pytest.raises(RegistrationRefused, match="did not bless") as err:
        register(repository, eval_dir=unblessed)
    assert any("below the bound" in r for r in err.value.reasons)
    other = tmp_path / "other"
    write_verdict_for(other, tmp_path / "elsewhere" / "checkpoints" / "step-00000001")
    with pytest.raises(RegistrationRefused, match="is about"):
        register(repository, eval_dir=other)
    assert Registry(repository).versions() == []
    assert not (repository / "models").exists()


def test_refused_when_the_catalogue_belongs_to_other_weights(
    register: Register, deployment: Deployment, tmp_path: Path
) -> None:
    cat = Catalogue.load(deployment.catalogue)
    stale = Catalogue(
        cat.clip_ids,
        cat.splits,
        cat.video_feats,
        cat.video_mask,
        cat.audio_feats,
        cat.audio_mask,
        {**cat.meta, "checkpoint_sha256": "0" * 64},
    ).save(tmp_path / "stale")
    with pytest.raises(RegistrationRefused, match="built with other weights"):
        register(catalogue=stale)


def test_refused_when_the_export_disagrees_with_eager(
    register: Register, deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = register_module.export_encoder

    def export_another_model(model: VLAModel, spec: object, sizes: object, path: Path) -> Path:
        other = load_model(deployment.checkpoint)
        with torch.no_grad():
            other.visual.proj.mul_(1.01)  # a 1 % error in the video projection
        return real_export(other, spec, sizes, path)  # type: ignore[arg-type]

    monkeypatch.setattr(register_module, "export_encoder", export_another_model)
    with pytest.raises(RegistrationRefused, match="disagree with eager") as err:
        register()
    assert any(r.startswith("video_encoder: video_feats differs") for r in err.value.reasons)
    repo = Registry(tmp_path / "registry")
    assert repo.versions() == [] and not (repo.models / "video_encoder").exists()
    assert not list((repo.root / ".staging").iterdir())


def test_a_crashed_publication_is_never_served_and_is_cleaned_up(
    register: Register, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register()
    real_write = store_module.write_bytes_atomic

    def crash(path: Path, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "write_bytes_atomic", crash)  # after the version folders, before the card
    with pytest.raises(OSError, match="disk full"):
        register()
    monkeypatch.setattr(store_module, "write_bytes_atomic", real_write)
    repo = Registry(tmp_path / "registry")
    assert repo.versions() == [1] and repo.aliases() == {"champion": 1, "challenger": 1}
    assert (repo.models / TEXT_ENCODER / "2").is_dir()  # orphaned, but no configuration names it
    assert all(_served_version(p) == 1 for p in repo.models.glob("*/config*.pbtxt"))
    third = register()
    assert third.version == 3 and repo.versions() == [1, 3]
    assert not (repo.models / TEXT_ENCODER / "2").exists() and not (repo.gpu / TEXT_ENCODER / "2").exists()


def test_one_writer_at_a_time(register: Register, tmp_path: Path) -> None:
    repo = Registry(tmp_path / "registry")
    with repo.lock(), pytest.raises(RegistryError, match="another registration"):
        register()


def test_register_command(deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository = tmp_path / "registry"
    args = [
        "register",
        "--checkpoint",
        str(deployment.checkpoint.parent.parent),  # a run folder: its newest checkpoint
        "--data",
        str(deployment.data),
        "--repository",
        str(repository),
    ]
    assert main([*args, "--eval", str(deployment.eval_dir), "--catalogue", str(deployment.catalogue)]) == 0
    out = capsys.readouterr().out
    assert "registered version 1" in out and "parity caption_decoder: ok" in out
    shutil.copytree(deployment.eval_dir, tmp_path / "eval")
    write_verdict_for(tmp_path / "eval", deployment.checkpoint, blessed=False)
    assert main([*args, "--eval", str(tmp_path / "eval")]) == 1  # catalogue built on the fly, then refused
    assert "did not bless" in capsys.readouterr().err
    assert Registry(repository).versions() == [1]


def test_register_leaves_quarantined_clips_out_of_the_catalogue(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clip `data validate` quarantined is not searchable in the registered version; the card says why."""
    clip = deployment.records[0]["clip_id"]
    reason = "caption leaked across splits"
    quarantine = tmp_path / "quarantine.jsonl"
    quarantine.write_text(json.dumps({"clip_id": clip, "reasons": [reason]}) + "\n" + json.dumps({"line": 9}) + "\n")
    repository = tmp_path / "registry"
    args = ["register", "--checkpoint", str(deployment.checkpoint), "--data", str(deployment.data)]
    args += ["--eval", str(deployment.eval_dir), "--repository", str(repository)]
    assert main([*args, "--quarantine", str(tmp_path / "absent.jsonl")]) == 3  # named, nothing registered
    assert "absent.jsonl: quarantine file not found" in capsys.readouterr().err
    assert main([*args, "--quarantine", str(quarantine)]) == 0
    assert f"dropped 1 quarantined clip(s) from the catalogue: 1 x {reason}" in capsys.readouterr().out
    repo = Registry(repository)
    assert repo.versions() == [1]
    card = repo.card(1)
    assert card["catalogue"]["clips"] == 11 and card["catalogue"]["dropped"] == {clip: reason}
    served = Catalogue.load(repo.models / "catalogue_search" / "1" / "catalogue.safetensors")
    assert len(served) == 11 and clip not in served.clip_ids


@pytest.mark.slow
def test_catalogue_build_and_publish_to_feast(
    deployment: Deployment, register: Register, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avlops.features.params import FeaturesConfig
    from avlops.features.store import get_online_clip_features, materialize_features

    out = tmp_path / "cat"
    args = ["catalogue", "build", "--checkpoint", str(deployment.checkpoint), "--data", str(deployment.data)]
    assert main([*args, "--out", str(out), "--splits", "test", "val"]) == 0
    built = Catalogue.load(out)
    assert 0 < len(built) < 12 and set(built.splits) <= {"test", "val"}

    feast = tmp_path / "feast"
    features = FeaturesConfig(
        repo_dir=str(feast), manifest=str(deployment.manifest), stats=str(deployment.data / "stats.parquet")
    )
    materialize_features(features)
    result = register()
    assert main(["catalogue", "publish", "champion", "--repository", result.repository, "--repo-dir", str(feast)]) == 0
    assert "published 12 clip embeddings of version 1" in capsys.readouterr().out
    clip = deployment.records[0]["clip_id"]
    got = get_online_clip_features(
        feast, [clip], ["clip_embedding:model_version", "clip_embedding:embedding", "clip_metadata:split"]
    )[clip]
    assert got["model_version"] == 1 and len(got["embedding"]) == 32
    assert got["split"] == deployment.records[0]["split"]
    # materializing the clip views again, with embeddings now in the store, shows only its own views' features
    again = materialize_features(features).example
    assert again and all("embedding" not in row and "split" in row for row in again.values())

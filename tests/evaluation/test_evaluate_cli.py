"""``avlops evaluate`` end to end on a tiny trained checkpoint: metrics, verdict, report, baseline, champion, an
audio-only AudioCaps-style dataset, and the exit codes of bad input."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from evaluation_data import TINY_PREPROCESS, tiny_model_config, write_checkpoint

from avlops.cli import main
from avlops.evaluation.blessing import read_verdict
from avlops.evaluation.names import CAPTION_METRICS, CAPTION_QUALITY, RETRIEVAL_METRICS, caption_key, retrieval_key
from avlops.evaluation.results import read_metrics
from avlops.modality import Modality
from avlops.preprocessing.run import preprocess_manifest

pytestmark = pytest.mark.slow


def params(path: Path, **evaluate: object) -> Path:
    path.write_text(yaml.safe_dump({"evaluate": evaluate}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def full_run(trained_run: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """One full evaluation (every task, captioning included): exit code, stdout, output folder."""
    out = tmp_path_factory.mktemp("eval") / "full"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # capsys is per test; this run is shared by the module
        code = main(
            ["evaluate", "--checkpoint", str(trained_run), "--data", str(corpus), "--out", str(out), "--no-progress"]
        )
    return code, buf.getvalue(), out


def test_full_evaluation_writes_every_metric_the_verdict_and_the_report(full_run: tuple[int, str, Path]) -> None:
    code, stdout, out = full_run
    assert code == 1, stdout  # the default gate: a 6-step model is not well above chance (below)
    result = read_metrics(out)
    for m in Modality:
        for task in (f"t2{m.value}", f"{m.value}2t"):
            for dsl in (False, True):
                assert {retrieval_key(task, k, dsl) for k in RETRIEVAL_METRICS} <= set(result.metrics)
        assert {caption_key(m, k) for k in CAPTION_METRICS} <= set(result.metrics)
    assert result.tasks["retrieval/t2av"] == {"queries": 11, "gallery": 5} and result.skipped == {}
    assert 0 <= result.metrics["retrieval/t2v/R@1"] <= 100 and 1 <= result.metrics["retrieval/t2v/MedR"] <= 5
    assert result.step == 6 and result.checkpoint.endswith("step-00000006")

    verdict = read_verdict(out / "blessing.json")
    assert verdict.checkpoint == result.checkpoint and verdict.metrics_file == "metrics.json"
    assert {c.kind for c in verdict.checks} == {"default"}
    assert "NOT BLESSED: " in stdout and "BLESSED: no blessing checks" not in stdout
    for m in Modality:
        assert {caption_key(m, k) for k in CAPTION_QUALITY} <= set(result.metrics)
    assert f"captions from av {result.metrics['captioning/av/empty']:.0f} % empty" in stdout
    assert f"report: {out / 'report.html'}" in stdout and "t2av  R@1/5/10" in stdout and "caption from av" in stdout

    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for name in ("recall-at-k", "ranks-v", "ranks-a", "ranks-av", "examples-v", "examples-a", "examples-av"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"plots/{name}.png" in html and f"plots/{name}.png" in md
    assert "<table>" in html and "| t2av +DSL |" in md and "## Example captions" in md
    assert "## Generated captions (%)" in md and "| distinct-2 |" in md
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(captions) == 5 and set(captions[0]["generated"]) == {"v", "a", "av"} and captions[0]["references"]
    examples = json.loads((out / "examples.json").read_text())
    assert set(examples) == {"t2v", "t2a", "t2av"} and len(examples["t2v"][0]["top"]) == 5


def test_baseline_comparison_and_champion_checks(
    full_run: tuple[int, str, Path], trained_run: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, first = full_run
    gate = {"thresholds": {"retrieval/t2av/R@1": {"min": 0}}, "max_regression": {"retrieval/t2av/R@1": 0.0}}
    gate["defaults"] = None  # a 6-step model is not well above chance
    argv = ["evaluate", "--checkpoint", str(trained_run), "--data", str(corpus), "--out", str(tmp_path / "again")]
    argv += ["--params", str(params(tmp_path / "p.yaml", bless=gate)), "--captioning", "--no-progress"]
    argv += ["--baseline", str(first / "metrics.json"), "--champion", str(first / "metrics.json")]
    assert main(argv) == 0  # the same model on the same data: no worse than itself
    assert "BLESSED: all 2 check(s) passed" in capsys.readouterr().out
    verdict = read_verdict(tmp_path / "again")
    assert [c.kind for c in verdict.checks] == ["threshold", "champion"]
    assert verdict.champion_file == str(first / "metrics.json")
    md = (tmp_path / "again" / "report.md").read_text()
    assert "## Against the baseline" in md and "| retrieval/t2av/R@1 |" in md and "| same |" in md
    assert "captioning/av/CIDEr" not in read_metrics(tmp_path / "again").metrics


def test_not_blessed_exits_1_with_every_reason(
    trained_run: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = {"thresholds": {"retrieval/t2av/R@1": {"min": 100.5}, "captioning/av/CIDEr": {"min": 1}}, "defaults": None}
    argv = ["evaluate", "--checkpoint", str(trained_run), "--data", str(corpus), "--out", str(tmp_path / "e")]
    argv += ["--params", str(params(tmp_path / "p.yaml", bless=gate, captioning=[])), "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "NOT BLESSED: retrieval/t2av/R@1 = " in out and "is below the bound 100.5 (threshold)" in out
    assert "captioning/av/CIDEr was not computed: not asked for (evaluate.captioning) (threshold)" in out
    verdict = json.loads((tmp_path / "e" / "blessing.json").read_text())
    assert verdict["blessed"] is False and len(verdict["reasons"]) == 2
    assert [c["passed"] for c in verdict["checks"]] == [False, False] and verdict["checks"][1]["value"] is None


def test_the_default_gate_fails_closed_and_the_opt_out_is_explicit(
    full_run: tuple[int, str, Path], trained_run: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 point 1: `evaluate` without --params blessed a near-chance model "without conditions"."""
    _, _, out = full_run
    verdict = read_verdict(out)
    r1 = next(c for c in verdict.checks if c.metric == "retrieval/t2av/R@1")
    assert r1.bound == 60.0 and "3x chance 20 % of a 5-clip gallery" in r1.reason  # min(3 x 20, 50 + 20 / 2)
    assert {c.metric for c in verdict.checks} >= {"captioning/av/empty", "captioning/av/degenerate"}
    # no check at all (defaults off, no thresholds): not blessed, and the message says how to configure checks
    argv = ["evaluate", "--checkpoint", str(trained_run), "--data", str(corpus), "--out", str(tmp_path / "e")]
    argv += ["--params", str(params(tmp_path / "p.yaml", bless={"defaults": None})), "--captioning", "--no-progress"]
    assert main(argv) == 1
    said = capsys.readouterr().out
    assert "NOT BLESSED: no blessing check ran" in said and "evaluate.bless.thresholds" in said
    assert main([*argv, "--unsafe-bless-without-checks"]) == 0
    assert "BLESSED: UNSAFE: no blessing check ran" in capsys.readouterr().out
    assert read_verdict(tmp_path / "e").blessed


def test_quarantined_clips_are_not_evaluated_on(
    full_run: tuple[int, str, Path], trained_run: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 point 3: a clip that validation quarantined was evaluated on."""
    _, _, first = full_run
    victim = json.loads((first / "captions.jsonl").read_text().splitlines()[0])["clip_id"]
    quarantine = tmp_path / "quarantine.jsonl"
    quarantine.write_text(json.dumps({"clip_id": victim, "reasons": ["audio is silent where audio_type says sound"]}))
    gate = {"defaults": None, "thresholds": {"retrieval/t2av/R@1": {"min": 0}}}
    argv = ["evaluate", "--checkpoint", str(trained_run), "--data", str(corpus), "--out", str(tmp_path / "e")]
    argv += ["--params", str(params(tmp_path / "p.yaml", bless=gate, quarantine=[str(quarantine)]))]
    assert main([*argv, "--captioning", "av", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dropped 1 quarantined clip(s) from split 'test': 1 x audio is silent where audio_type says sound" in out
    result = read_metrics(tmp_path / "e")
    assert result.tasks["retrieval/t2av"]["gallery"] == 4 and result.tasks["captioning/av"] == {"clips": 4}
    captioned = {json.loads(x)["clip_id"] for x in (tmp_path / "e" / "captions.jsonl").read_text().splitlines()}
    assert victim not in captioned and len(captioned) == 4


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory: pytest.TempPathFactory, write_wav: Callable[..., Path]) -> Path:
    """An AudioCaps-style dataset (CSV + wavs, `avlops data import csv`), preprocessed for the tiny model."""
    root = tmp_path_factory.mktemp("audiocaps")
    rows = ["audiocap_id,youtube_id,start_time,caption"]
    for i, (freq, what) in enumerate(
        [(220, "a low hum"), (880, "a high beep"), (440, "a steady tone"), (1760, "a whistle")]
    ):
        write_wav(root / "audio" / f"yt{i}.wav", seconds=0.6, freq=freq)
        rows += [f"{2 * i},yt{i},0,{what} plays", f"{2 * i + 1},yt{i},0,someone hears {what}"]
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "import", "csv", "--root", str(root), "--csv", str(root / "test.csv"), "--split", "test"]) == 0
    preprocess_manifest(root / "manifest.jsonl", root / "pre", TINY_PREPROCESS, progress=False)
    return root / "pre"


def test_audio_only_dataset_skips_the_video_tasks(
    audio_only: Path, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--checkpoint", str(trained_run), "--data", str(audio_only), "--out", str(tmp_path / "e")]
    argv += ["--params", str(params(tmp_path / "p.yaml", bless={"defaults": None})), "--unsafe-bless-without-checks"]
    assert main([*argv, "--no-progress"]) == 0
    result = read_metrics(tmp_path / "e")
    assert result.tasks == {
        "retrieval/t2a": {"queries": 8, "gallery": 4},
        "retrieval/a2t": {"queries": 4, "gallery": 8},
        "captioning/a": {"clips": 4},
    }
    assert result.skipped["retrieval/t2v"] == "no clip of split 'test' has video"
    assert set(result.skipped) == {
        "retrieval/t2v",
        "retrieval/v2t",
        "retrieval/t2av",
        "retrieval/av2t",
        "captioning/v",
        "captioning/av",
    }
    assert "skipped retrieval/t2av: no clip of split 'test' has video" in capsys.readouterr().out
    assert (tmp_path / "e" / "plots" / "examples-a.png").is_file()
    # asking only for what the data lacks is an error that names the missing modality
    assert main([*argv, "--retrieval", "v", "av", "--captioning", "v", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "nothing to evaluate on split 'test'" in err and "no clip of split 'test' has video" in err


@pytest.fixture(scope="module")
def msrvtt_mute(tmp_path_factory: pytest.TempPathFactory, write_video: Callable[..., Path]) -> Path:
    """An MSR-VTT-style dataset (id lists, txt_mapper.json, raw_videos/ without sound tracks), imported by
    `avlops data import valor` and preprocessed for the tiny model."""
    root = tmp_path_factory.mktemp("msrvtt")
    ids = [f"video{i}" for i in range(5)]
    for i, vid in enumerate(ids):
        write_video(root / "raw_videos" / f"{vid}.mp4", with_audio=False, size=16 + 8 * i)
    mapper = {vid: [f"clip number {i} shows a square", f"a moving square, take {i}"] for i, vid in enumerate(ids)}
    (root / "txt_mapper.json").write_text(json.dumps(mapper))
    (root / "train_ids.json").write_text(json.dumps(ids[:1]))
    (root / "test_ids.json").write_text(json.dumps(ids[1:]))
    argv = ["data", "import", "valor", "--root", str(root), "--ids-train", "train_ids.json"]
    assert main([*argv, "--ids-test", "test_ids.json", "--txt-mapper", "txt_mapper.json"]) == 0
    preprocess_manifest(root / "manifest.jsonl", root / "pre", TINY_PREPROCESS, progress=False)
    return root / "pre"


def test_video_only_msrvtt_style_dataset_skips_the_audio_tasks(
    msrvtt_mute: Path, trained_run: Path, tmp_path: Path
) -> None:
    argv = ["evaluate", "--checkpoint", str(trained_run), "--data", str(msrvtt_mute), "--out", str(tmp_path / "e")]
    argv += ["--params", str(params(tmp_path / "p.yaml", bless={"defaults": None})), "--unsafe-bless-without-checks"]
    assert main([*argv, "--no-progress"]) == 0
    result = read_metrics(tmp_path / "e")
    assert set(result.tasks) == {"retrieval/t2v", "retrieval/v2t", "captioning/v"}
    assert result.tasks["retrieval/t2v"] == {"queries": 8, "gallery": 4}
    assert result.skipped["retrieval/t2a"] == "no clip of split 'test' has audio"
    assert result.skipped["captioning/av"] == "no clip of split 'test' has both video and audio (av would repeat v)"


def test_bad_input_exit_codes(
    corpus: Path, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["evaluate", "--data", str(corpus), "--out", str(tmp_path / "e"), "--no-progress"]
    assert main(base) == 2
    assert "checkpoint: nothing to evaluate; give --checkpoint" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path / "none")]) == 3
    assert "checkpoint not found" in capsys.readouterr().err
    big = write_checkpoint(tmp_path / "big", tiny_model_config(vision={"image_size": 64}))
    assert main([*base, "--checkpoint", str(big)]) == 3
    assert "frames are [3, 32, 32], the model takes [3, 64, 64]" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(trained_run), "--params", str(params(tmp_path / "p.yaml", beam=2))]) == 2
    assert "[evaluate]: beam: Extra inputs are not permitted" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(trained_run), "--baseline", str(tmp_path / "nope.json")]) == 3
    assert "nope.json: metrics file not found" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no java
    assert main([*base, "--checkpoint", str(trained_run), "--retrieval"]) == 3
    assert "captioning metrics need a Java runtime, but `java` is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_help() -> None:
    assert main(["evaluate", "--help"]) == 0

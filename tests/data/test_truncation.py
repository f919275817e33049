"""`check` decodes past the first frame: truncated and partly missing media are found (issue 12, point 7)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from avlops.data.media import MediaError, probe
from ffmpeg_media import needs_tools, speech_wav, truncated_copy, video

pytestmark = needs_tools


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    return {
        "mp4": video(d / "a.mp4", extra=("-movflags", "+faststart")),  # index first: opens fine when cut
        "webm": video(d / "a.webm", vcodec="libvpx-vp9", acodec="libopus"),
        "mkv": video(d / "a.mkv"),
        "wav": speech_wav(d / "a.wav", "seven", rate=8000),
    }


@pytest.mark.parametrize("kind", ["mp4", "webm", "mkv", "wav"])
def test_truncated_files_are_named_with_where_they_stop(media: dict[str, Path], kind: str, tmp_path: Path) -> None:
    good = probe(media[kind])
    assert good.duration_s is not None and good.duration_s > 0.5
    cut = truncated_copy(media[kind], tmp_path / f"cut.{kind}")
    assert probe(cut, decode=False)  # opening and the first frame are fine: this is what `check` used to look at
    t0 = time.perf_counter()
    with pytest.raises(MediaError, match=r"cut\.\w+: truncated") as err:
        probe(cut)
    assert time.perf_counter() - t0 < 10  # demuxing only: a fraction of a second here; generous on a busy machine
    assert "declares" in str(err.value) or "stopped" in str(err.value)


def test_check_quarantines_a_truncated_faststart_mp4(media: dict[str, Path], tmp_path: Path) -> None:
    """The reproduction: a faststart mp4 cut mid-file passed `import` and `check` and failed only in `preprocess`."""
    import json

    from avlops.cli import main

    root = tmp_path / "mine"
    (root / "a.mp4").parent.mkdir(parents=True)
    (root / "a.mp4").write_bytes(media["mp4"].read_bytes())
    truncated_copy(media["mp4"], root / "b.mp4")
    for name in ("a", "b"):
        (root / f"{name}.txt").write_text(f"clip {name} shows a test pattern with a tone\n")
    assert main(["data", "import", "folder", "--root", str(root), "--max-bad-fraction", "0.5"]) == 0
    quarantined = [json.loads(x) for x in (root / "quarantine.jsonl").read_text().splitlines()]
    assert [q["clip_id"] for q in quarantined] == ["b"]
    assert "truncated" in "; ".join(quarantined[0]["reasons"])
    assert [json.loads(x)["clip_id"] for x in (root / "manifest.jsonl").read_text().splitlines()] == ["a"]


def test_ffmpeg_errors_read_as_text(tmp_path: Path) -> None:
    """Issue 12 point 8: messages showed "FFmpeg error 1094995529" instead of the error's text."""
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(b"not a video at all " * 50)
    with pytest.raises(MediaError) as err:
        probe(bad)
    assert "Invalid data found when processing input" in str(err.value) and "1094995529" not in str(err.value)

"""The images' Dockerfiles, checked offline with Docker's own parser (no Docker engine runs here): every file they
copy exists, the environment comes from the lockfile, tasks run as a non-root user, and the training image runs
torchrun."""

from __future__ import annotations

from pathlib import Path

import dockerfile

REPO = Path(__file__).resolve().parents[2]


def _commands(name: str) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(REPO / "infra" / "docker" / name)))


def test_component_image_installs_the_locked_project_and_drops_root() -> None:
    cmds = _commands("component.Dockerfile")
    assert cmds[0].cmd == "FROM"
    for c in cmds:
        if c.cmd == "COPY":
            for src in c.value[:-1]:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"
    runs = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
    assert "uv sync --frozen --no-dev" in runs and "ffmpeg" in runs and "default-jre-headless" in runs
    assert [c.value[0] for c in cmds if c.cmd == "USER"] == ["1000:1000"]
    copied = {c.value[0] for c in cmds if c.cmd == "COPY"}
    assert {"src", "components", "pipelines", "serving", "configs"} <= copied  # what the tasks import and read


def test_training_image_runs_torchrun_on_the_component_image() -> None:
    cmds = _commands("train.Dockerfile")
    assert any(c.cmd == "FROM" and c.value[0] == "${BASE}" for c in cmds)
    assert [c.value for c in cmds if c.cmd == "ENTRYPOINT"] == [("torchrun",)]

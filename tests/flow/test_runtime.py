"""The quick end of a KFP task process: teardown skipped only after the outputs are written, never on failure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avlops.flow.runtime import end_after_outputs, executor_output_file

TASK = textwrap.dedent(
    """
    import json, logging, sys
    from avlops.flow.runtime import end_after_outputs

    out, log, mode = sys.argv[1:4]
    argv = ["executor_main", "--executor_input", json.dumps({"outputs": {"outputFile": out}})]
    print("armed", end_after_outputs(argv, {"_KFP_RUNTIME": "true"}), flush=True)
    logging.basicConfig(filename=log, level=logging.INFO)
    logging.info("step ran")

    class Finalised:
        def __del__(self):
            print("finalised", flush=True)

    kept = Finalised()
    print("unflushed line", end="")  # standard output still buffered at exit
    if mode == "fail":
        raise RuntimeError("the step failed")
    with open(out, "w") as fh:
        fh.write("{}")
    """
)


def _task(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp_path / "task.log"
    proc = subprocess.run(
        [sys.executable, "-c", TASK, str(tmp_path / "out" / "executor_output.json"), str(log), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc, log


def test_a_task_that_wrote_its_outputs_ends_without_teardown(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    proc, log = _task(tmp_path, "ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("armed True")
    assert "unflushed line" in proc.stdout  # streams flushed before the process ends
    assert "finalised" not in proc.stdout  # the interpreter's teardown was skipped
    assert "step ran" in log.read_text()  # logging flushed too


def test_a_failed_task_exits_as_python_does(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    proc, _ = _task(tmp_path, "fail")
    assert proc.returncode == 1
    assert "RuntimeError: the step failed" in proc.stderr
    assert "finalised" in proc.stdout  # a normal exit: nothing skipped
    assert not (tmp_path / "out" / "executor_output.json").exists()


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["avlops", "pipeline", "run"], {"_KFP_RUNTIME": "true"}),  # not an executor
        (["executor_main", "--executor_input", json.dumps({"outputs": {"outputFile": "/x"}})], {}),  # not in KFP
    ],
)
def test_outside_a_kfp_task_nothing_is_armed(argv: list[str], environ: dict[str, str]) -> None:
    assert end_after_outputs(argv, environ) is False


def test_the_outputs_file_is_read_from_either_spelling() -> None:
    payload = json.dumps({"outputs": {"outputFile": "/runs/r/task/executor_output.json"}})
    assert executor_output_file(["--executor_input", payload]) == Path("/runs/r/task/executor_output.json")
    assert executor_output_file([f"--executor_input={payload}"]) == Path("/runs/r/task/executor_output.json")
    assert executor_output_file(["--executor_input", "not json"]) is None
    assert executor_output_file(["--executor_input", json.dumps({"outputs": {}})]) is None

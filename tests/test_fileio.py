"""Files written safely and read with clear errors (``avlops.fileio``): atomic writes, the run lock, JSON objects."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from avlops.fileio import exclusive_lock, read_json_object, sha256_file, write_bytes_atomic, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.safetensors"
    write_bytes_atomic(target, b"old")

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # dies after writing the temp file, before the rename
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_json_round_trip_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    write_json_atomic(path, {"x": [1, "é"]})
    assert read_json_object(path) == {"x": [1, "é"]}
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json_atomic(tmp_path / "nan.json", {"x": float("nan")})  # NaN is not JSON
    assert not (tmp_path / "nan.json").exists()


def test_read_json_object_names_the_file_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.json: metrics file not found \(run it\)"):
        read_json_object(tmp_path / "gone.json", what="metrics file", hint=" (run it)")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: unreadable verdict: "):
        read_json_object(tmp_path / "bad.json", what="verdict")
    (tmp_path / "list.json").write_text("[1]", encoding="utf-8")

    class MyError(RuntimeError):
        pass

    with pytest.raises(MyError, match=r"list\.json: card: expected a JSON object, got list"):
        read_json_object(tmp_path / "list.json", what="card", error=MyError)


def test_exclusive_lock_refuses_a_second_writer_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with exclusive_lock(folder, lambda: RuntimeError("busy")):
        assert (folder / ".lock").is_file()
        with pytest.raises(RuntimeError, match="busy"), exclusive_lock(folder, lambda: RuntimeError("busy")):
            pass
    with exclusive_lock(folder, lambda: RuntimeError("busy")):  # released: the next writer gets it
        pass


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path, umask: int, mode: int) -> None:
    """Issue 12 point 8: index.json, shards and reports were written 0600 instead of honouring the umask."""
    before = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "index.json", {"a": 1})
        write_bytes_atomic(tmp_path / "shard.bin", b"x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(before)
    for name in ("index.json", "shard.bin", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name

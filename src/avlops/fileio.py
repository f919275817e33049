"""Files written safely and read with clear errors: atomic writes, sha256 of files, the run lock, JSON objects.

Standard library only (no torch, no pandas), so light modules — the blessing gate, the metrics file, the registry —
write and read files without importing the heavy ones.

Every write goes to a hidden temporary name in the target's folder (``.<name>.<random>.tmp``), is fsynced, then
renamed over the target: a reader (or a resumed run) sees either the old file or the complete new one, never half of
one. A failed write leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "exclusive_lock",
    "read_json_object",
    "sha256_file",
    "write_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
]

#: the lock file a writer holds in the folder it writes (training runs, preprocessing runs, the registry)
LOCK_NAME = ".lock"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask: from /proc (Linux, no side effect), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)``, fsync the result, and rename it over ``path``; a failure leaves no temp file.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask), not the temporary file's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(Path(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON (no NaN or infinity) to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode())


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def exclusive_lock(folder: Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold ``folder/.lock`` (flock) while the block runs, so two writers never share one folder.

    Never waits: when another process holds the lock, raises ``busy()`` (the caller's error, naming what is running).
    The folder is created if needed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_NAME).open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json_object(
    path: Path,
    *,
    what: str = "JSON file",
    error: Callable[[str], Exception] = ValueError,
    missing: Callable[[str], Exception] = FileNotFoundError,
    hint: str = "",
) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises ``missing("<path>: <what> not found<hint>")`` when there is no such file, and ``error(...)`` naming the
    file and the reason when it cannot be read, is not JSON or holds something other than an object.
    """
    if not path.is_file():
        raise missing(f"{path}: {what} not found{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable {what}: {err}") from err
    if not isinstance(data, dict):
        raise error(f"{path}: {what}: expected a JSON object, got {type(data).__name__}")
    return data

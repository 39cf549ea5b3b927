"""Atomic file writes: every file aerun writes goes to a temp file, then os.replace,
so a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from aerun import faults
from aerun.errors import STORAGE_ERRNOS, storage_error


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temp path beside `path`; on success it replaces `path` in one step. A disk that
    refuses (full, read-only, no permission) raises one StorageError naming `path`; the old
    file, if any, is left as it was and the temp file is removed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, f"writing {path}") from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data, point: str = "write") -> None:
    """`data` to `path` atomically; `point` names the write for fault-injection tests."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            faults.at(point)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)

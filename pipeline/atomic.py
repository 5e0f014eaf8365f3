"""Atomic file publication for every stage: write beside the target, fsync, rename over it.

A reader never sees a half-written file, and a kill at any moment leaves either the old file or
the new one (plus, at worst, a hidden ``.<name>.*.tmp`` that the next write ignores). Temp files
get the permissions a plain ``open()`` would give (``0666`` minus the umask), not ``mkstemp``'s
private ``0600``, so outputs stay readable as usual.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PUBLIC_MODE = 0o666
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_beside(path: str | Path, suffix: str = TMP_SUFFIX) -> Path:
    """Create an empty hidden temp file in ``path``'s folder (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, path: str | Path) -> Path:
    """fsync ``tmp``, give it the usual file mode and rename it over ``path``."""
    tmp, path = Path(tmp), Path(path)
    _fsync_file(tmp)
    os.chmod(tmp, PUBLIC_MODE & ~_umask())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """Yield a temp path beside ``path``; publish it on success, delete it on any error."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


__all__ = ["atomic_path", "publish", "temp_beside", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic", "TMP_SUFFIX"]

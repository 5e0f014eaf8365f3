"""Atomic file publication for every stage: write beside the target, fsync, rename over it.

A reader never sees a half-written file, and a kill at any moment leaves either the old file or
the new one (plus, at worst, a hidden ``.<name>.*.tmp`` that the next write ignores). Temp files
get the permissions a plain ``open()`` would give (``0666`` minus the umask), not ``mkstemp``'s
private ``0600``, so outputs stay readable as usual.

Folders (a zarr group, say) are published the same way: built under a hidden temp folder beside
the target, every file fsynced, then renamed into place (:func:`atomic_dir`). Every temp name,
file or folder, follows the one scheme ``.<target name>.<random>.tmp``; :func:`temp_target`
recognises it, so cleanup code can tell scratch from live files.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PUBLIC_MODE = 0o666
PUBLIC_DIR_MODE = 0o777
TMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(rf"^\.(?P<target>.+)\.[A-Za-z0-9_]+{re.escape(TMP_SUFFIX)}$")


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


def temp_target(name: str) -> str | None:
    """The target name a temp name (``.<target>.<random>.tmp``) stands for, else None."""
    match = _TEMP_NAME.match(name)
    return match.group("target") if match else None


def temp_dir_beside(path: str | Path) -> Path:
    """Create an empty hidden temp folder in ``path``'s folder (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))


def publish(tmp: str | Path, path: str | Path) -> Path:
    """fsync ``tmp``, give it the usual file mode and rename it over ``path``."""
    tmp, path = Path(tmp), Path(path)
    _fsync_file(tmp)
    os.chmod(tmp, PUBLIC_MODE & ~_umask())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def publish_dir(tmp: str | Path, path: str | Path) -> Path:
    """fsync every file under folder ``tmp``, give it the usual modes and rename it to ``path``
    (which must not exist, or be an empty folder)."""
    tmp, path = Path(tmp), Path(path)
    mask = _umask()
    for root, _dirs, files in os.walk(tmp):
        for name in files:
            _fsync_file(Path(root) / name)
        os.chmod(root, PUBLIC_DIR_MODE & ~mask)
        _fsync_dir(Path(root))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; publish it on success, delete it on any error."""
    tmp = temp_dir_beside(path)
    try:
        yield tmp
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


__all__ = ["atomic_dir", "atomic_path", "publish", "publish_dir", "temp_beside", "temp_dir_beside",
           "temp_target", "write_bytes_atomic", "write_json_atomic", "write_text_atomic",
           "TMP_SUFFIX"]

"""Atomic file publication: write beside the target, then rename over it.

Temp files get the permissions a plain ``open()`` would have given (``0666`` minus the umask),
not ``mkstemp``'s private ``0600``, so outputs stay readable to the user's group as usual.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

PUBLIC_MODE = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: str | Path) -> Path:
    """Create an empty temp file in ``path``'s folder (hidden name ending ``.tmp``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Give ``tmp`` the usual file mode and rename it over ``path``."""
    os.chmod(tmp, PUBLIC_MODE & ~_umask())
    os.replace(tmp, path)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


__all__ = ["publish", "temp_beside", "write_bytes_atomic", "write_text_atomic"]

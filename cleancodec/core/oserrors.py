"""Operating-system failures in plain words: full disk, permissions, read-only file systems.

Every stage turns an ``OSError`` (and libsndfile's opaque "System error", which hides the errno)
into a :class:`StageOSError` whose message names the path and says what happened, e.g.
``runs/x/latest.pt: no space left on device``, instead of a library traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PLAIN = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "not a directory",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error (failing disk or network file system?)",
}
LOW_SPACE_BYTES = 1 << 20  # a write that failed with this little free space was a full disk


class StageOSError(OSError):
    """An OS failure, worded for people: ``str()`` is ``"<path>: <what happened>"``."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


def describe(exc: BaseException, path: str | Path | None = None) -> str:
    """``"<path>: <plain reason>"`` for an OSError (or a libsndfile system error)."""
    where = str(path or getattr(exc, "filename", None) or "")
    code = getattr(exc, "errno", None)
    if code in PLAIN:
        reason = PLAIN[code]
    elif code is not None and code > 0:
        reason = os.strerror(code).lower()
    else:
        reason = _guess(where) or str(exc) or type(exc).__name__
    return f"{where}: {reason}" if where else reason


def _guess(path: str) -> str | None:
    """libsndfile reports "System error." without an errno: look at the destination instead."""
    if not path:
        return None
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if shutil.disk_usage(folder).free < LOW_SPACE_BYTES:
            return PLAIN[errno.ENOSPC]
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return PLAIN[errno.EACCES]
    return None


def stage_error(exc: BaseException, path: str | Path | None = None) -> StageOSError:
    """``exc`` (an OSError, or a library error that hides one) as a worded StageOSError."""
    return StageOSError(getattr(exc, "errno", None) or 0, describe(exc, path))


def is_os_failure(exc: BaseException) -> bool:
    """True for OSError and for libsndfile's "System error" (an OS failure under the hood)."""
    if isinstance(exc, OSError):
        return True
    return type(exc).__name__ == "LibsndfileError" and "System error" in str(exc)


@contextlib.contextmanager
def named_os_errors(path: str | Path | None = None) -> Iterator[None]:
    """Re-raise OS failures inside the block as :class:`StageOSError` naming ``path``."""
    try:
        yield
    except StageOSError:
        raise
    except Exception as exc:
        if not is_os_failure(exc):
            raise
        raise stage_error(exc, path) from exc

"""One process per directory: an OS-level lock on a run, cache or output folder.

A stage that writes a folder (training: the run directory; the cache build: the cache
directory; denoise: the output folder) holds ``<folder>/.cleancodec.lock`` with ``fcntl.flock``
while it runs. The kernel releases the lock when the process ends, however it ends (``kill -9``
included), so a stale lock file never blocks a rerun: only a live holder does. The file records
the holder (pid, host, command, start time), which a refused second process names.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".cleancodec.lock"


class DirectoryLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (no holder details recorded)"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(since {holder.get('since', '?')}: {holder.get('command', '?')})")


class DirectoryLock:
    """``with DirectoryLock(folder, "train"):`` — hold ``folder`` for this process.

    Parameters
    ----------
    folder : str or Path
        Created if missing.
    stage : str
        Named in the refusal message (e.g. ``"train"``, ``"cache"``, ``"denoise"``).

    Raises
    ------
    DirectoryLockedError
        At once (no waiting) when another live process holds the lock, naming its pid and host.
    """

    def __init__(self, folder: str | Path, stage: str):
        self.folder, self.stage = Path(folder), stage
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise DirectoryLockedError(
                f"{self.folder}: in use by {_describe(holder)}; `cleancodec {self.stage}` "
                "refuses to share it (wait for that process, stop it, or choose another folder)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage,
                  "command": " ".join(sys.argv), "since": dt.datetime.now().isoformat("T",
                                                                                      "seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def holder(folder: str | Path) -> dict | None:
    """The recorded holder of ``folder``'s lock if a live process holds it, else ``None``."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return DirectoryLock._read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

"""pipeline.dirlock: one process per folder; the OS frees the lock when the holder dies."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cleancodec.core.dirlock import DirectoryLock, DirectoryLockedError, holder

HOLD = """
import sys, time
from cleancodec.core.dirlock import DirectoryLock
lock = DirectoryLock(sys.argv[1], "train").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _hold_in_child(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_naming_pid_and_host(tmp_path):
    proc = _hold_in_child(tmp_path)
    try:
        with pytest.raises(DirectoryLockedError) as err:
            DirectoryLock(tmp_path, "train").acquire()
        message = str(err.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message
        assert str(tmp_path) in message and "cleancodec train" in message
        assert holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_leaves_no_stale_lock(tmp_path):
    proc = _hold_in_child(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".cleancodec.lock").exists() and holder(tmp_path) is None
    with DirectoryLock(tmp_path, "train") as lock:
        assert lock.held and holder(tmp_path)["pid"] == os.getpid()
    assert holder(tmp_path) is None


def test_release_lets_the_next_process_in(tmp_path):
    first = DirectoryLock(tmp_path / "new", "cache").acquire()
    with pytest.raises(DirectoryLockedError, match="cleancodec cache"):
        DirectoryLock(tmp_path / "new", "cache").acquire()  # same process, other descriptor
    first.release()
    start = time.monotonic()
    DirectoryLock(tmp_path / "new", "cache").acquire().release()
    assert time.monotonic() - start < 1.0

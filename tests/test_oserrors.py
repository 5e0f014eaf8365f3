"""pipeline.oserrors: OS failures named in plain words with their path."""
from __future__ import annotations

import errno

import pytest

from cleancodec.core.oserrors import StageOSError, describe, named_os_errors


def test_errno_is_worded_with_the_path():
    exc = OSError(errno.ENOSPC, "No space left on device", "/x/y.wav")
    assert describe(exc) == "/x/y.wav: no space left on device"
    assert describe(PermissionError(errno.EACCES, "denied"), "/r/o") == "/r/o: permission denied"


def test_named_os_errors_converts_and_keeps_other_errors(tmp_path):
    with pytest.raises(StageOSError, match=r"out\.txt: read-only file system"):
        with named_os_errors(tmp_path / "out.txt"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(ValueError):
        with named_os_errors(tmp_path):
            raise ValueError("not an OS failure")

"""What every benchmark shares: the commit it measured, and appending its report to
BENCHMARKS.md."""
from __future__ import annotations

import subprocess
from pathlib import Path

from cleancodec.core.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"
BENCHMARKS_TITLE = "# Benchmarks\n\nEach `bench/*.py` appends its table here (newest last).\n"


def git_commit() -> str:
    """``git describe --always --dirty`` of the repository, or ``unknown``."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_benchmarks(text: str, path: Path = BENCHMARKS) -> Path:
    """Append ``text`` (a Markdown section) to ``path`` atomically, creating it with a title."""
    old = path.read_text() if path.is_file() else BENCHMARKS_TITLE
    write_text_atomic(path, old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
    return path


def publish(text: str, out: Path = BENCHMARKS, append: bool = True) -> None:
    """Print a benchmark's Markdown report and, unless told not to, append it to ``out``."""
    print(text)
    if append:
        append_benchmarks(text, out)
        print(f"appended to {out}")

"""bench/gpu.py runs end to end (its --smoke mode on the CPU), so a GPU session can rely on it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_prints_every_table():
    before = (REPO / "BENCHMARKS.md").read_text()
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--smoke"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for header in ("| codec | batch |", "| cache build, mixing workers |", "| train (bf16) |",
                   "| denoise |"):
        assert header in out, header
    assert "failed" not in out and "encode-in-step ÷ cached step" in out
    assert (REPO / "BENCHMARKS.md").read_text() == before  # a smoke run appends nothing

"""bench/stream_long.py: the end-to-end and memory runs of the streaming benchmark work (their
figures are only printed, never asserted)."""
from __future__ import annotations

import pytest

from bench.stream import SMOKE, bench_models
from bench.stream_long import e2e_lines, e2e_rows, memory_lines, memory_rows
from cleancodec.infer.denoise import Enhancer


@pytest.mark.slow
def test_stream_long_runs(tmp_path):
    codec, model, x = bench_models(SMOKE["arch"])
    e2e = e2e_rows(Enhancer(codec, model), x, SMOKE["arch"], 1.0, tmp_path, repeats=1)
    assert set(e2e["walls"]) == {"denoise", "denoise --stream"}
    assert all(len(v) == 1 and v[0] > 0 for v in e2e["walls"].values())
    assert "ratio" in e2e_lines(e2e)[-1]
    memory = memory_rows(SMOKE["arch"], 2.0)
    assert len(memory["samples"]) >= 2 and all(rss > 0 for _, rss in memory["samples"])
    assert "peak of the second half" in memory_lines(memory)[-1]

"""bench/stream_floor.py: the layer-by-layer decomposition of a stateful step runs and leaves
the step as it was (its figures are only printed, never asserted)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from bench.stream import SMOKE, bench_models
from bench.stream_floor import LEAVES, capture, measure, report
from cleancodec.infer.denoise import Enhancer
from cleancodec.infer.stateful import TorchStepChain


def test_capture_records_every_layer_once_and_restores_the_step():
    codec, model, x = bench_models(SMOKE["arch"])
    engine = Enhancer(codec, model)
    block = 4 * codec.hop_length
    with torch.inference_mode():
        chain = TorchStepChain(engine)
        leaves = capture(chain, x, block)
        layers = [m for m in chain.graph.modules() if isinstance(m, LEAVES)]
        assert len(leaves) == len(layers)
        assert {id(leaf.layer) for leaf in leaves} == {id(m) for m in layers}
        assert all("step" not in vars(m) for m in layers)
        # the chain streams on as before: its next block equals a fresh chain's
        fresh = TorchStepChain(engine)
        for i in range(4):
            fresh.step(x[None, i * block:(i + 1) * block])
        nxt = x[None, 4 * block:5 * block]
        np.testing.assert_array_equal(chain.step(nxt), fresh.step(nxt))
        read = [t for leaf in leaves for t in leaf.tensors_read()]
        assert read and all(t.numel() for t in read)


def test_measure_and_report():
    threads = torch.get_num_threads()
    try:
        row = measure(1, 80.0, repeats=1, arch=SMOKE["arch"])
    finally:
        torch.set_num_threads(threads)
    assert row.threads == 1 and row.block_ms == 80.0
    assert min(row.offline, row.step, row.traced, row.in_order, row.warm, row.read) > 0
    assert row.read_mb > 0 and row.faults >= 0 and row.kept is None
    text = report([row], ("0.0", "0.0"), SMOKE["arch"])
    assert text.count("\n| 1 | 80 ms |") == 1
    assert "| n/a |" in text


def test_kept_reference_in_its_own_process():
    """glibc's setting outlives the call, so it is exercised in a process of its own: the
    offline forward with freed memory kept is timed and pays no more faults than by default."""
    script = Path(__file__).resolve().parents[1] / "bench" / "stream_floor.py"
    out = subprocess.run([sys.executable, str(script), "--arch", SMOKE["arch"], "--threads", "1",
                          "--repeats", "1", "--no-append"], capture_output=True, text=True,
                         check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("| 1 |"))
    default, kept = (cell.strip() for cell in row.split("|")[3:5])
    assert kept != "n/a", row
    faults = [int(cell.split(", ")[1].split()[0]) for cell in (default, kept)]
    assert faults[1] <= faults[0], row

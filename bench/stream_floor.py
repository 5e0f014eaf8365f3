"""Where a stateful streaming step's time goes beyond offline denoising (torch): the step's
layers, each run again and again on its own inputs (weights in cache where they fit), against the
same layers run once each in the step's order (each weight read from memory, as in a step),
the time to read the tensors the step reads, and the offline forward of the same audio.

A step of a short block reads every weight of the codec (about 300 MB for DAC-16k) for a few
frames, while offline denoising reads each once per chunk of seconds. The layers repeated on
their own inputs keep their weights in cache where they fit; run once each in the step's order,
they read them from memory as a step does. The difference between the two, against the time
to read those weights alone, is how much of a step's extra cost over offline is that reading.

The offline forward's own speed depends on glibc's ``malloc``: by default it hands the memory of
large activations back to the system after a forward and the next forward pays page faults to
touch it again; told to keep freed memory (``mallopt``), later forwards fault no more. The
table gives the reference in both modes, the second measured after everything else (the setting
stays for the rest of the process).

Runs the benchmark models of ``bench/stream.py`` (real DAC-16k architecture at RANDOM INIT,
small denoiser). Layers are timed eagerly (Python between the ops, as in an untraced step);
the table also gives the traced step that streams run.

Usage: ``python bench/stream_floor.py [--arch dac16k] [--block-ms 100] [--threads 1,2]
[--repeats 15] [--no-append]``; prints a Markdown table and appends it to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import git_commit, publish  # noqa: E402
from bench.denoise import load_average  # noqa: E402
from bench.stream import MS_PER_S, bench_models, offline_ms_per_s  # noqa: E402
from cleancodec.infer import stream_layers as sl  # noqa: E402
from cleancodec.infer.denoise import Enhancer  # noqa: E402
from cleancodec.infer.stateful import StatefulStream, TorchStepChain  # noqa: E402

DEFAULT_ARCH = "dac16k"
LEAVES = (sl.StreamConv1d, sl.StreamConvTranspose1d, sl.Pointwise, sl.StreamWindowGRN)
WARMUP = 3  # untimed runs before each timing
OFFLINE_REPEATS = 3
# glibc's mallopt parameters (malloc.h) and the values that make it keep freed memory: blocks up
# to 32 MiB (glibc's ceiling for its own adaptive threshold on 64-bit) come from the heap, and
# the heap is never trimmed. Faults vanish after two or three forwards (2026-12-04: 290-297 ms
# per s of audio with 2 threads and 0-443 faults, against 312-371 ms and 126-137 k by default).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_MMAP_THRESHOLD, KEEP_TRIM_THRESHOLD = 32 * 2 ** 20, 2 ** 31 - 1
KEPT_WARMUP = 3  # forwards after the setting before the timed ones
BYTES_PER_MB, MB_PER_GB = 1e6, 1e3


@dataclass
class Leaf:
    """One streamed layer with the inputs it got in a step (state: zeros of its shapes)."""

    layer: sl.StepLayer
    x: Tensor
    at: sl.At
    state: list[Tensor]

    def run(self) -> None:
        self.layer.step(self.x, self.at, iter(self.state), [])

    def tensors_read(self) -> list[Tensor]:
        """The weights a step of this layer reads (a transposed convolution reads its
        rearranged weight, not the module's)."""
        if isinstance(self.layer, sl.StreamConvTranspose1d):
            bias = self.layer.conv.bias
            return [self.layer.polyphase, *([] if bias is None else [bias])]
        return [*self.layer.parameters(), *self.layer.buffers()]


def capture(chain: TorchStepChain, x: np.ndarray, block: int, steps: int = 4) -> list[Leaf]:
    """The leaf layers of ``chain``'s graph in the order a step runs them, with the inputs of
    its ``steps``-th step of ``block`` samples."""
    leaves: list[Leaf] = []
    layers = [m for m in chain.graph.modules() if isinstance(m, LEAVES)]

    def recorder(layer: sl.StepLayer) -> Callable:
        def step(x, at, state, new_state):
            leaves.append(Leaf(layer, x, at, [torch.zeros(s) for s in layer.state_shapes(1)]))
            return type(layer).step(layer, x, at, state, new_state)
        return step

    for i in range(steps - 1):
        chain.step(x[None, i * block:(i + 1) * block])
    for layer in layers:  # an instance attribute, removed after the step
        layer.step = recorder(layer)
    try:
        chain.step(x[None, (steps - 1) * block:steps * block])
    finally:
        for layer in layers:
            del layer.step
    return leaves


def in_order_ms(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Each of ``fns`` timed when all run once in turn, ``repeats`` times (after
    :data:`WARMUP` untimed turns): the median of each, in ms."""
    times = np.zeros((repeats + WARMUP, len(fns)))
    for r in range(repeats + WARMUP):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[r, i] = time.perf_counter() - start
    return list(np.median(times[WARMUP:], axis=0) * MS_PER_S)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """``fn`` run on its own again and again: the median, in ms."""
    return in_order_ms([fn], repeats)[0]


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory (see the module docstring); False where the
    C library has no ``mallopt`` or refuses the values."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's C library
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))


def offline_with_faults(engine: Enhancer, x: np.ndarray, warmup: int = 0) -> tuple[float, int]:
    """The offline forward's ms per s of audio and page faults per forward: medians of
    :data:`OFFLINE_REPEATS` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        offline_ms_per_s(engine, x)
    runs = []
    for _ in range(OFFLINE_REPEATS):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ms = offline_ms_per_s(engine, x)
        runs.append((ms, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return float(np.median([r[0] for r in runs])), int(np.median([r[1] for r in runs]))


def read_all(tensors: list[Tensor]) -> Callable[[], object]:
    return lambda: [t.sum() for t in tensors]


@dataclass
class Floor:
    threads: int
    block_ms: float
    offline: float  # ms of offline forward per block of audio
    faults: int  # page faults per offline forward
    kept: float | None  # the same with glibc keeping freed memory (None: not available)
    kept_faults: int
    step: float  # eager step p50
    traced: float  # traced step p50 (what streams run)
    in_order: float  # sum of the leaves run once each in the step's order
    warm: float  # sum of each leaf's median when repeated on its own
    read_mb: float
    read: float  # sum of each leaf's reading time in the step's order


def measure(threads: int, block_ms: float, repeats: int, arch: str = DEFAULT_ARCH) -> Floor:
    """Every column of the table for ``threads`` and ``block_ms`` (medians of ``repeats``)."""
    torch.set_num_threads(threads)
    codec, model, x = bench_models(arch, threads)
    engine = Enhancer(codec, model)
    block = int(block_ms * codec.sample_rate / MS_PER_S)
    with torch.inference_mode():
        chain = TorchStepChain(engine)
        leaves = capture(chain, x, block)
        warm = [median_ms(leaf.run, repeats) for leaf in leaves]
        in_order = in_order_ms([leaf.run for leaf in leaves], repeats)
        weights = [leaf.tensors_read() for leaf in leaves]
        reads = in_order_ms([read_all(tensors) for tensors in weights], repeats)
        read_bytes = sum(t.numel() * t.element_size() for tensors in weights for t in tensors)
        pos = [0]

        def push(fn: Callable[[np.ndarray], object]) -> Callable[[], object]:
            def run():
                pos[0] = (pos[0] + block) % (len(x) - 2 * block)
                return fn(x[pos[0]:pos[0] + block])
            return run

        step = median_ms(push(lambda b: chain.step(b[None])), repeats)
    stream = StatefulStream.for_engine(engine, block_ms=block_ms)
    stream.push(x[:stream.geometry.lookahead + block])
    traced = median_ms(push(stream.push), repeats)
    offline, faults = offline_with_faults(engine, x)
    return Floor(threads, block_ms, offline * block_ms / MS_PER_S, faults, None, 0, step, traced,
                 sum(in_order), sum(warm), read_bytes / BYTES_PER_MB, sum(reads))


def add_kept_reference(rows: list[Floor], arch: str = DEFAULT_ARCH) -> None:
    """Fill each row's offline reference with glibc keeping freed memory. The setting holds for
    the rest of the process: call this after every other measurement."""
    if not keep_freed_memory():
        return
    for row in rows:
        torch.set_num_threads(row.threads)
        codec, model, x = bench_models(arch, row.threads)
        kept, row.kept_faults = offline_with_faults(Enhancer(codec, model), x, KEPT_WARMUP)
        row.kept = kept * row.block_ms / MS_PER_S


def report(rows: list[Floor], load: tuple[str, str], arch: str = DEFAULT_ARCH) -> str:
    def cell(ms: float, f: Floor) -> str:
        kept = "" if f.kept is None else f" / {ms / f.kept:.2f}"
        return f"{ms:.1f} ({ms / f.offline:.2f}{kept})"

    lines = [
        f"## stateful step against offline, layer by layer (`bench/stream_floor.py`), "
        f"{dt.date.today().isoformat()}, commit {git_commit()}",
        "",
        f"**RANDOM-INIT CODEC** ({arch} architecture, small denoiser; the models of "
        f"`bench/stream.py`). CPU, torch {torch.__version__}, 2 shared cores; load average "
        f"{load[0]} at the start, {load[1]} at the end. Milliseconds per block, "
        "÷ the offline forward's cost of the block's audio in brackets: by default / with "
        "glibc keeping freed memory (no page faults on the activations; measured last). "
        "Offline: ms per block and page faults per 5 s forward. Layers: the step's "
        "streamed layers (convolutions, pointwise modules, the quantizer) timed eagerly; "
        "*in order*: each run once in the step's order (weights come from memory, as in a "
        "step); *repeated*: each run again and again on its own inputs (weights in cache where "
        "they fit); *read*: summing the tensors each layer reads, in the step's order.",
        "",
        "| threads | block | offline (default) | offline (memory kept) | step (eager) | "
        "step (traced) | layers in order | layers repeated | in order − repeated | "
        "weights read |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in rows:
        kept = "n/a" if f.kept is None else f"{f.kept:.1f}, {f.kept_faults} faults"
        lines.append(
            f"| {f.threads} | {f.block_ms:.0f} ms | {f.offline:.1f}, {f.faults} faults | "
            f"{kept} | {cell(f.step, f)} | {cell(f.traced, f)} | {cell(f.in_order, f)} | "
            f"{cell(f.warm, f)} | {f.in_order - f.warm:.1f} | {f.read_mb:.0f} MB in "
            f"{f.read:.1f} ms ({f.read_mb / MB_PER_GB / (f.read / MS_PER_S):.0f} GB/s) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="dac16k | tiny")
    parser.add_argument("--block-ms", type=float, default=100.0)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    start_load = load_average()
    rows = [measure(int(t), args.block_ms, args.repeats, args.arch)
            for t in args.threads.split(",")]
    add_kept_reference(rows, args.arch)
    publish(report(rows, (start_load, load_average()), args.arch), append=not args.no_append)


if __name__ == "__main__":
    main()

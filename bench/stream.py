"""Streaming benchmark: latency per block size; per-block compute time (p50 / p99) and
real-time factor with 1 and 2 CPU threads, torch and onnxruntime side by side.

Runs the real DAC-16k architecture at RANDOM INIT (pretrained weights cannot be downloaded on
the benchmark machine): compute times are those of the real networks; the audio is
meaningless. The denoiser is a small random-init ``trainer.models.Denoiser`` (width 256,
depth 2, ``grn: none``: ±6 frames), with its zero-initialised head randomised.

For each block size the latency is ``block + lookahead`` (``infer.stream``; the lookahead is
the chain's receptive field rounded up to whole 20 ms frames). Timing: two streams, the torch
``Enhancer`` and the exported full graph run by onnxruntime (``infer.onnx_engine``), are fed
the same noisy speech one block at a time, alternating (so a drift in the machine's load falls
on both), after enough input that every window is full length; the time of each ``push`` that
emits one block is recorded. Each push comes after a pause of ``PARK_S``: the worker threads
of the engine that ran before keep spinning for a while after their last parallel region
(torch's libgomp workers, onnxruntime's pool), and without the pause onnxruntime took 12 % and
torch 5 % longer per block than when each ran alone (2 threads, 1 s blocks, 2026-12-01); with
it, both are within the run-to-run spread of running alone. A configuration is real-time when
its p99 stays below the block's duration.

Usage: ``python bench/stream.py [--blocks 16] [--device cuda] [--smoke] [--onnx GRAPH]
[--no-append]``; prints a Markdown table and appends it to BENCHMARKS.md (``--smoke``: the tiny
codec, two block sizes, a few blocks, never appended: a check that the benchmark runs;
``--onnx``: a graph already exported from :func:`bench_models`' models, checked and used
instead of exporting one).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_benchmarks, git_commit  # noqa: E402
from bench.denoise import load_average, noisy_speech  # noqa: E402
from cleancodec.core.codec import (  # noqa: E402
    RANDOM_INIT_BANNER,
    Codec,
    CodecConfig,
    load_codec,
)
from cleancodec.infer.denoise import Enhancer, snr_db  # noqa: E402
from cleancodec.infer.export import ExportReport, export_full  # noqa: E402
from cleancodec.infer.onnx_engine import OnnxEnhancer  # noqa: E402
from cleancodec.infer.receptive import codec_chain_field  # noqa: E402
from cleancodec.infer.stream import StreamDenoiser, StreamGeometry  # noqa: E402
from cleancodec.trainer.models import Denoiser  # noqa: E402

LATENCY_FRAMES = (1, 2, 5, 10, 25, 50)  # block sizes of the latency table (20 ms frames)
TIMED_FRAMES = (5, 25, 35, 50)  # block sizes timed (100 ms … 1 s)
THREADS = (1, 2)
DENOISER = {"width": 256, "depth": 2, "grn": "none"}
HEAD_STD = 0.02  # randomised head: the denoiser changes the latents, as a trained one does
WARMUP_BLOCKS = 2  # timed pushes discarded (first full-size window: kernel set-up)
PARK_S = 0.2  # pause before each push: the other engine's worker threads stop spinning
# timed blocks per row: with 8, the two engines' p50 ratio moved by about ±12 % between runs
# on these shared cores (2026-12-01); 16 halve the weight of a stretch of host load
DEFAULT_BLOCKS = 16
SMOKE = {"arch": "tiny", "timed": (2, 5), "latency": (1, 5), "blocks": 2, "threads": (1,)}
MS_PER_S = 1000.0
PERCENTILES = (50, 99)
SPEECH_SECONDS, SPEECH_SEED = 30.0, 4  # the noisy speech streamed
STATS_SECONDS = 5  # seconds of it whose latents give the denoiser its statistics
CHECK_FRAMES, CHECK_AMPLITUDE = 40, 0.1  # --onnx: the random wave checked against torch


@dataclass
class Timing:
    """Per-block compute times of one engine at one block size and thread count."""

    engine: str
    threads: int | str
    geometry: StreamGeometry
    seconds: list[float]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.seconds, q))

    @property
    def realtime(self) -> bool:
        return self.percentile(PERCENTILES[1]) < self.geometry.block / self.geometry.sample_rate


def small_denoiser(latent_dim: int, stats_from: torch.Tensor) -> Denoiser:
    torch.manual_seed(0)
    model = Denoiser(latent_dim, **DENOISER)
    with torch.no_grad():
        model.set_latent_stats(stats_from.mean((0, 2)), stats_from.std((0, 2)))
        torch.nn.init.normal_(model.head.weight, std=HEAD_STD)
    return model.eval()


def time_blocks(streams: dict[str, StreamDenoiser], x: np.ndarray,
                n_blocks: int) -> tuple[dict[str, list[float]], float]:
    """Feed every stream the same input one block at a time, alternating, each push after a
    pause of :data:`PARK_S`; per-block push times of the ``n_blocks`` blocks after the
    warm-up, and the SNR between the first two streams' outputs."""
    g = next(iter(streams.values())).geometry
    fill = (-(-g.context // g.block) + 1) * g.block + g.lookahead  # every later window is full
    need = fill + (WARMUP_BLOCKS + n_blocks) * g.block
    if need > len(x):
        x = np.tile(x, -(-need // len(x)))
    outs: dict[str, list[np.ndarray]] = {k: [s.push(x[:fill])] for k, s in streams.items()}
    times: dict[str, list[float]] = {k: [] for k in streams}
    for i in range(WARMUP_BLOCKS + n_blocks):
        block = x[fill + i * g.block: fill + (i + 1) * g.block]
        for name, stream in streams.items():
            time.sleep(PARK_S)
            start = time.perf_counter()
            y = stream.push(block)
            elapsed = time.perf_counter() - start
            assert y.shape[0] == g.block, "one push of a block emits one block"
            outs[name].append(y)
            if i >= WARMUP_BLOCKS:
                times[name].append(elapsed)
    joined = [np.concatenate(v) for v in outs.values()]
    agreement = snr_db(joined[0], joined[1]) if len(joined) > 1 else float("nan")
    return times, agreement


def bench_models(arch: str, threads: int = 1) -> tuple[Codec, Denoiser, np.ndarray]:
    """The benchmark's random-init codec (``arch``), its small denoiser and the noisy speech
    it streams (float32 ``[T]``, :data:`SPEECH_SECONDS`); the same on every call."""
    codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                   device="cpu", num_threads=threads))
    x = noisy_speech(SPEECH_SECONDS, SPEECH_SEED)
    model = small_denoiser(codec.latent_dim, codec.encode(x[: STATS_SECONDS * codec.sample_rate]))
    return codec, model, x


def given_graph(path: Path, codec: Codec, model: Denoiser) -> ExportReport:
    """An exported full graph of ``codec`` and ``model`` (``--onnx``), checked by its metadata
    and against torch on one batch; its report as if just exported."""
    engine = OnnxEnhancer(path)
    meta = engine.meta
    same = json.loads(json.dumps([codec.identity, model.model_args]))
    if [engine.codec.identity, json.loads(meta.get("model_args", "null"))] != same:
        raise SystemExit(f"{path}: not the graph of this benchmark's codec and denoiser "
                         "(export it with bench.stream.bench_models, or omit --onnx)")
    rng = np.random.default_rng(0)
    x = (CHECK_AMPLITUDE * rng.standard_normal((1, CHECK_FRAMES * codec.hop_length))
         ).astype(np.float32)
    ref, got = Enhancer(codec, model)(x), engine(x)
    return ExportReport(path, "full", float(np.max(np.abs(ref - got))), snr_db(ref, got),
                        size_bytes=path.stat().st_size)


def run(arch: str, device: str, timed: tuple[int, ...], threads: tuple[int, ...],
        n_blocks: int, tmp: Path, onnx: Path | None = None) -> tuple[list[Timing], dict]:
    codec, model, x = bench_models(arch, max(threads))
    field = codec_chain_field(codec, model)
    if onnx is None:
        onnx_path = tmp / "stream_full.onnx"
        report = export_full(codec, model, onnx_path)
    else:
        onnx_path, report = onnx, given_graph(onnx, codec, model)
    info = {"field": field, "export": report, "agreement": {}}
    if device != "cpu":
        codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                       device=device))
    torch_engine = Enhancer(codec, model)
    timings = []
    for n_threads in threads if device == "cpu" else ("gpu",):
        if device == "cpu":
            torch.set_num_threads(n_threads)
        onnx_engine = OnnxEnhancer(onnx_path, threads=n_threads if device == "cpu" else 0,
                                   device=device)
        engines = {"torch": torch_engine}
        if device == "cpu" or onnx_engine.codec.device.type == "cuda":
            engines["onnxruntime"] = onnx_engine
        for frames in timed:
            streams = {k: StreamDenoiser.for_engine(e, block_frames=frames)
                       for k, e in engines.items()}
            times, agreement = time_blocks(streams, x, n_blocks)
            info["agreement"][(n_threads, frames)] = agreement
            geometry = next(iter(streams.values())).geometry
            timings += [Timing(k, n_threads, geometry, v) for k, v in times.items()]
            print(f"  {n_threads} thread(s), block {geometry.block_ms:.0f} ms: "
                  + ", ".join(f"{t.engine} p50 {t.percentile(50) * MS_PER_S:.0f} ms"
                              for t in timings[-len(times):]), file=sys.stderr, flush=True)
    return timings, info


def report(arch: str, device: str, latency_frames: tuple[int, ...], timings: list[Timing],
           info: dict, n_blocks: int, wall: float, load: tuple[str, str]) -> str:
    field, export = info["field"], info["export"]
    lines = [
        f"## streaming denoise (`bench/stream.py`), {dt.date.today()}, commit {git_commit()}",
        "",
        f"**{RANDOM_INIT_BANNER}** Compute times are those of the real "
        f"{'DAC-16k' if arch == 'dac16k' else arch} architecture; the denoiser is a small "
        f"random-init one (width {DENOISER['width']}, depth {DENOISER['depth']}, grn "
        f"{DENOISER['grn']}: ±{field.denoiser} frames).",
        "",
        f"Machine: {_device_name(device)}; 2 CPU cores shared with other jobs (noisy timings), "
        f"{platform.machine()}, torch {torch.__version__}, onnxruntime "
        f"{_ort_version()}. Receptive field: {field.describe()}. Whole run "
        f"{wall / 60:.1f} min; load average {load[0]} at the start, {load[1]} at the end.",
        "",
        "| block ms | lookahead ms | latency ms (block + lookahead) | window ms (context + "
        "block + lookahead) |",
        "|---:|---:|---:|---:|",
    ]
    for frames in latency_frames:
        g = StreamGeometry.for_field(field, frames)
        lines.append(f"| {g.block_ms:.0f} | {g.ms(g.lookahead):.0f} | {g.latency_ms:.0f} | "
                     f"{g.ms(g.window):.0f} |")
    lines += ["", f"Per-block compute ({n_blocks} blocks per row after {WARMUP_BLOCKS} warm-up, "
                  f"the engines alternating block by block with a {PARK_S:g} s pause before "
                  f"each; p99 of {n_blocks} is about their maximum). RTF = p50 / block "
                  "duration.", "",
              "| engine | threads | block ms | latency ms | p50 ms | p99 ms | RTF (p50) | "
              "real time (p99 < block) |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for t in timings:
        g = t.geometry
        lines.append(f"| {t.engine} | {t.threads} | {g.block_ms:.0f} | {g.latency_ms:.0f} | "
                     f"{t.percentile(50) * MS_PER_S:.0f} | {t.percentile(99) * MS_PER_S:.0f} | "
                     f"{t.percentile(50) / (g.block / g.sample_rate):.2f} | "
                     f"{'yes' if t.realtime else 'no'} |")
    lines.append("")
    for key in sorted({(t.engine, t.threads) for t in timings}, key=str):
        rows = [t for t in timings if (t.engine, t.threads) == key and t.realtime]
        best = min(rows, key=lambda t: t.geometry.block, default=None)
        lines.append(f"- smallest real-time block, {key[0]} with {key[1]} thread(s): "
                     + (f"{best.geometry.block_ms:.0f} ms (latency {best.geometry.latency_ms:.0f}"
                        " ms)" if best else "none of the blocks measured"))
    worst = min(info["agreement"].values()) if info["agreement"] else float("nan")
    lines += [f"- exported full graph: {export.size_bytes / 2**20:.0f} MiB, onnxruntime vs torch "
              f"max abs difference {export.max_abs_diff:.2g} (SNR {export.snr_db:.0f} dB); "
              f"streamed outputs of the two engines agree to ≥ {worst:.0f} dB SNR", ""]
    return "\n".join(lines)


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch), CPU for the rest"
    return "CPU"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS,
                        help="timed blocks per engine, block size and thread count")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (torch on the GPU; "
                        "onnxruntime too where its CUDA provider is installed)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny codec, two block sizes, a few blocks; never appended")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="a full graph already exported from this benchmark's models "
                             "(bench_models of the same architecture): skips the export")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    arch, timed, latency, threads, blocks = "dac16k", TIMED_FRAMES, LATENCY_FRAMES, THREADS, \
        args.blocks
    if args.smoke:
        arch, timed, latency = SMOKE["arch"], SMOKE["timed"], SMOKE["latency"]
        threads, blocks = SMOKE["threads"], min(args.blocks, SMOKE["blocks"])
    start, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as tmp:
        timings, info = run(arch, args.device, timed, threads, blocks, Path(tmp), args.onnx)
    text = report(arch, args.device, latency, timings, info, blocks,
                  time.perf_counter() - start, (load_start, load_average()))
    print(text)
    if not (args.no_append or args.smoke):
        append_benchmarks(text)


if __name__ == "__main__":
    main()

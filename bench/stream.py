"""Streaming benchmark: latency per block size; per-block compute time (p50 / p99) of the
windowed and the stateful stream, torch and onnxruntime side by side, with 1 and 2 CPU threads,
against the offline cost of the same audio; the end-to-end cost of ``denoise --stream`` and
the memory of a long stream (``bench/stream_long.py``).

Runs the real DAC-16k architecture at RANDOM INIT (pretrained weights cannot be downloaded on
the benchmark machine): compute times are those of the real networks; the audio is
meaningless. The denoiser is a small random-init ``trainer.models.Denoiser`` (width 256,
depth 2, ``grn: none``: ±6 frames), with its zero-initialised head randomised.

For each block size the latency is ``block + lookahead`` (``infer.stream``; the lookahead is
the chain's receptive field rounded up to whole 20 ms frames), the same for both streams.
Engines: the windowed stream (``infer.stream``: the whole chain over ``context + block +
lookahead`` for each block) of the torch ``Enhancer`` and of the exported full graph
(``export --full``); the stateful stream (``infer.stateful``: layer state, the chain over the
block's own samples) of the torch modules and of the exported streaming step (``export --full
--streaming``). Timing, as a live source feeds a stream: the engines get the same noisy
speech, after enough input that every window is full length, in runs of blocks pushed at the
real-time rate (block k at k block durations after the run's start, at once when the previous
push ran late); each stream's blocks come in :data:`ROUNDS` runs, the streams' runs
alternating (so a drift in the machine's load falls on all); the time of each ``push`` that
emits one block is recorded. Each run starts after a pause of ``PARK_S`` (the worker threads
of the engine that ran before keep spinning for a while after their last parallel region:
torch's libgomp workers, onnxruntime's pool) and an untimed push: after an idle pause the
first step of DAC-16k took up to 37 % longer with 2 threads (2026-12-02), a wake-up cost that
a stream fed at the real-time rate pays only when it runs faster than real time. (Until
2026-12-02 every block came after such a pause, alternating block by block: that timed the
wake-up of every step.) The windowed streams run at :data:`SIDE_BY_SIDE_FRAMES` only (seconds
per block below that). The offline cost is one forward of each engine over
:data:`OFFLINE_SECONDS` of the same speech, measured in the same alternation: just before each
block size's rows, once per round among the streams' runs (after the same pause) and just
after; "÷ offline" divides a block's p50 by the median of these for that engine, for the
block's duration. (Until 2026-12-03 the reference was the mean of the forwards before and after
alone: between two runs on one host it moved by 19 % while the step's p50 moved by 6 %.)
A configuration is real-time when its p99 stays below the block's duration.

Usage: ``python bench/stream.py [--blocks 16] [--device cuda] [--smoke] [--onnx GRAPH]
[--onnx-step GRAPH] [--block-ms 100,200] [--stateful-only] [--rounds 2] [--no-long]
[--memory-arch tiny] [--memory-seconds 600] [--no-append]``; prints a
Markdown table and appends it to BENCHMARKS.md (``--smoke``: the tiny codec, a few block
sizes and blocks, short end-to-end and memory runs, never appended: a check that the benchmark
runs; ``--onnx`` / ``--onnx-step``: graphs already exported from :func:`bench_models`' models,
checked and used instead of exporting them; ``--block-ms`` with ``--stateful-only``: the
stateful streams alone at those sizes; ``--rounds N``: N runs per stream, an offline reference
in each, and every stateful row's ratio per round).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
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
from cleancodec.infer.export import (  # noqa: E402
    KIND_FULL,
    KIND_STREAM,
    ExportReport,
    export_full,
    export_streaming,
)
from cleancodec.infer.onnx_engine import OnnxEnhancer  # noqa: E402
from cleancodec.infer.receptive import codec_chain_field  # noqa: E402
from cleancodec.infer.stateful import StatefulStream  # noqa: E402
from cleancodec.infer.stream import StreamDenoiser, StreamGeometry  # noqa: E402
from cleancodec.trainer.models import Denoiser  # noqa: E402

LATENCY_FRAMES = (1, 2, 5, 10, 25, 50)  # block sizes of the latency table (20 ms frames)
SIDE_BY_SIDE_FRAMES = (5, 10, 25, 50)  # 100 ms … 1 s: all four engines, alternating
STATEFUL_FRAMES = (1, 2, 3)  # 20, 40, 60 ms: the stateful engines alone
THREADS = (1, 2)
DENOISER = {"width": 256, "depth": 2, "grn": "none"}
HEAD_STD = 0.02  # randomised head: the denoiser changes the latents, as a trained one does
ROUNDS = 2  # runs per stream and block size; the streams' runs alternate
WARMUP_BLOCKS = 1  # pushes at the start of each run, not timed (wake-up after the pause)
PARK_S = 0.2  # pause before each run: the other engine's worker threads stop spinning
# timed blocks per row: with 8, the two engines' p50 ratio moved by about ±12 % between runs
# on these shared cores (2026-12-01); 16 halve the weight of a stretch of host load
DEFAULT_BLOCKS = 16
OFFLINE_SECONDS = 5.0  # audio of the offline reference forward (one chunk)
SMOKE = {"arch": "tiny", "side_by_side": (2, 5), "stateful": (1,), "latency": (1, 5),
         "blocks": 2, "threads": (1,), "e2e_seconds": 2.0, "e2e_repeats": 1,
         "memory_seconds": 20.0}
MS_PER_S = 1000.0
HOP_MS = 20.0  # one latent frame of the 16 kHz codecs (--block-ms is given in ms)
PERCENTILES = (50, 99)
SPEECH_SECONDS, SPEECH_SEED = 30.0, 4  # the noisy speech streamed
STATS_SECONDS = 5  # seconds of it whose latents give the denoiser its statistics
CHECK_FRAMES, CHECK_AMPLITUDE = 40, 0.1  # --onnx: the random wave checked against torch
STREAMS = {"windowed": StreamDenoiser, "stateful": StatefulStream}
ENGINES = ("torch", "onnxruntime")


@dataclass
class Timing:
    """Per-block compute times of one engine and stream at one block size and thread count."""

    engine: str
    stream: str
    threads: int | str
    geometry: StreamGeometry
    seconds: list[float]
    offline_ms_per_s: float  # the engine's offline cost: median of the forwards around the row
    offline_per_round: list[float] = dataclasses.field(default_factory=list)  # each round's

    def per_round_ratios(self) -> list[float]:
        """Each round's p50 ÷ that round's offline cost of the block's audio."""
        per_run = blocks_per_run(len(self.seconds), len(self.offline_per_round))
        block_s = self.geometry.block / self.geometry.sample_rate
        runs = [(self.seconds[i * per_run:(i + 1) * per_run], off)
                for i, off in enumerate(self.offline_per_round)]
        return [float(np.median(run)) * MS_PER_S / (off * block_s) for run, off in runs if run]

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


def blocks_per_run(n_blocks: int, rounds: int) -> int:
    """Timed blocks in each of a stream's ``rounds`` runs (the last may time fewer)."""
    return -(-n_blocks // rounds) if rounds else 0


def time_blocks(streams: dict[str, StreamDenoiser], x: np.ndarray, n_blocks: int,
                offline: dict[str, Callable[[], float]], rounds: int = ROUNDS,
                ) -> tuple[dict[str, list[float]], float, dict[str, list[float]]]:
    """Feed every stream the same input as a live source would and time each push that emits
    a block: per stream ``rounds`` runs of blocks, the streams' runs alternating (a drift
    in the machine's load falls on all); each run starts after a pause of :data:`PARK_S` with
    :data:`WARMUP_BLOCKS` untimed pushes, then pushes block k at ``k · block`` seconds after
    the run's start (at once when the previous push ran late), as blocks of a live source
    arrive. Each round first calls every ``offline`` measurement (ms per s of audio), after
    the same pause. Returns the ``n_blocks`` times per stream, the worst SNR between the first
    stream's output and each other's, and the offline measurements per name."""
    g = next(iter(streams.values())).geometry
    block_s = g.block / g.sample_rate
    fill = (-(-g.context // g.block) + 1) * g.block + g.lookahead  # every later window is full
    per_run = blocks_per_run(n_blocks, rounds)
    need = fill + rounds * (WARMUP_BLOCKS + per_run) * g.block
    if need > len(x):
        x = np.tile(x, -(-need // len(x)))
    outs: dict[str, list[np.ndarray]] = {k: [s.push(x[:fill])] for k, s in streams.items()}
    times: dict[str, list[float]] = {k: [] for k in streams}
    cursor = dict.fromkeys(streams, fill)
    offline_ms: dict[str, list[float]] = {k: [] for k in offline}
    for _ in range(rounds):
        for name, measure in offline.items():
            time.sleep(PARK_S)
            offline_ms[name].append(measure())
        for name, stream in streams.items():
            time.sleep(PARK_S)
            run_start = time.perf_counter()
            for i in range(WARMUP_BLOCKS + per_run):
                time.sleep(max(0.0, run_start + i * block_s - time.perf_counter()))
                block = x[cursor[name]: cursor[name] + g.block]
                cursor[name] += g.block
                start = time.perf_counter()
                y = stream.push(block)
                elapsed = time.perf_counter() - start
                assert y.shape[0] == g.block, "one push of a block emits one block"
                outs[name].append(y)
                if i >= WARMUP_BLOCKS:
                    times[name].append(elapsed)
    joined = [np.concatenate(v) for v in outs.values()]
    agreement = min((snr_db(joined[0], y) for y in joined[1:]), default=float("nan"))
    return {k: v[:n_blocks] for k, v in times.items()}, agreement, offline_ms


def bench_models(arch: str, threads: int = 1) -> tuple[Codec, Denoiser, np.ndarray]:
    """The benchmark's random-init codec (``arch``), its small denoiser and the noisy speech
    it streams (float32 ``[T]``, :data:`SPEECH_SECONDS`); the same on every call."""
    codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                   device="cpu", num_threads=threads))
    x = noisy_speech(SPEECH_SECONDS, SPEECH_SEED)
    model = small_denoiser(codec.latent_dim, codec.encode(x[: STATS_SECONDS * codec.sample_rate]))
    return codec, model, x


def given_graph(path: Path, kind: str, codec: Codec, model: Denoiser) -> ExportReport:
    """An exported graph (``kind`` full or stream) of ``codec`` and ``model`` (``--onnx`` /
    ``--onnx-step``), checked by its metadata and against torch on one batch; its report as if
    just exported."""
    engine = OnnxEnhancer(path)
    meta = engine.meta
    same = json.loads(json.dumps([kind, codec.identity, model.model_args]))
    if [meta["kind"], engine.codec.identity, json.loads(meta.get("model_args", "null"))] != same:
        raise SystemExit(f"{path}: not the {kind} graph of this benchmark's codec and denoiser "
                         "(export it from bench.stream.bench_models, or omit the option)")
    rng = np.random.default_rng(0)
    x = (CHECK_AMPLITUDE * rng.standard_normal((1, CHECK_FRAMES * codec.hop_length))
         ).astype(np.float32)
    ref, got = Enhancer(codec, model)(x), engine(x)
    return ExportReport(path, kind, float(np.max(np.abs(ref - got))), snr_db(ref, got),
                        size_bytes=path.stat().st_size)


def offline_ms_per_s(engine: Enhancer, x: np.ndarray) -> float:
    """Milliseconds of one offline forward per second of audio (after one warm-up)."""
    n = int(OFFLINE_SECONDS * engine.sample_rate)
    engine(x[None, : engine.sample_rate])
    start = time.perf_counter()
    engine(x[None, :n])
    return (time.perf_counter() - start) * MS_PER_S / OFFLINE_SECONDS


def _streams(engines: dict[str, dict[str, Enhancer]], frames: int,
             kinds: tuple[str, ...]) -> dict[tuple[str, str], StreamDenoiser]:
    return {(name, kind): STREAMS[kind].for_engine(by_kind[kind], block_frames=frames)
            for kind in kinds for name, by_kind in engines.items() if kind in by_kind}


def run(arch: str, device: str, frames: tuple[tuple[int, ...], tuple[int, ...]],
        threads: tuple[int, ...], n_blocks: int, tmp: Path,
        graphs: tuple[Path | None, Path | None], rounds: int = ROUNDS,
        ) -> tuple[list[Timing], dict]:
    """Every row: ``frames`` = (side-by-side block sizes, stateful-only block sizes)."""
    codec, model, x = bench_models(arch, max(threads))
    info = {"field": codec_chain_field(codec, model), "exports": {}, "agreement": {},
            "offline": {}}
    paths = {}
    for kind, given, export in ((KIND_FULL, graphs[0], export_full),
                                (KIND_STREAM, graphs[1], export_streaming)):
        paths[kind] = given or tmp / f"{kind}.onnx"
        info["exports"][kind] = (given_graph(given, kind, codec, model) if given
                                 else export(codec, model, paths[kind]))
    if device != "cpu":
        codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                       device=device))
    torch_engine = Enhancer(codec, model)
    timings = []
    for n_threads in threads if device == "cpu" else ("gpu",):
        if device == "cpu":
            torch.set_num_threads(n_threads)
        onnx = {kind: OnnxEnhancer(paths[kind], threads=n_threads if device == "cpu" else 0,
                                   device=device) for kind in paths}
        engines = {"torch": {"windowed": torch_engine, "stateful": torch_engine}}
        if device == "cpu" or onnx[KIND_FULL].codec.device.type == "cuda":
            engines["onnxruntime"] = {"windowed": onnx[KIND_FULL], "stateful": onnx[KIND_STREAM]}
        measure = {k: functools.partial(offline_ms_per_s, e["windowed"], x)
                   for k, e in engines.items()}
        offline = {k: m() for k, m in measure.items()}
        for block_frames, kinds in [*((f, tuple(STREAMS)) for f in frames[0]),
                                    *((f, ("stateful",)) for f in frames[1])]:
            streams = _streams(engines, block_frames, kinds)
            times, info["agreement"][(n_threads, block_frames)], during = time_blocks(
                {f"{e} {k}": s for (e, k), s in streams.items()}, x, n_blocks, measure, rounds)
            before, offline = offline, {k: m() for k, m in measure.items()}
            rows = [Timing(e, k, n_threads, s.geometry, times[f"{e} {k}"],
                           float(np.median([before[e], *during[e], offline[e]])), during[e])
                    for (e, k), s in streams.items()]
            timings += rows
            print(f"  {n_threads} thread(s), block {rows[0].geometry.block_ms:.0f} ms: "
                  + ", ".join(f"{t.engine} {t.stream} p50 {t.percentile(50) * MS_PER_S:.0f} ms"
                              for t in rows), file=sys.stderr, flush=True)
        for k in engines:
            info["offline"][(k, n_threads)] = [t.offline_ms_per_s for t in timings
                                               if (t.engine, t.threads) == (k, n_threads)]
    return timings, info


def _row(t: Timing, timings: list[Timing]) -> str:
    g = t.geometry
    block_s = g.block / g.sample_rate
    p50 = t.percentile(50)
    windowed = next((w.percentile(50) for w in timings if w.stream == "windowed" and
                     (w.engine, w.threads, w.geometry.block) == (t.engine, t.threads, g.block)),
                    None)
    ratio = f"{p50 / windowed:.3f}" if t.stream == "stateful" and windowed else ""
    per_offline = f"{p50 * MS_PER_S / (t.offline_ms_per_s * block_s):.2f}"
    return (f"| {t.engine} | {t.stream} | {t.threads} | {g.block_ms:.0f} | {g.latency_ms:.0f} | "
            f"{p50 * MS_PER_S:.1f} | {t.percentile(99) * MS_PER_S:.1f} | {per_offline} | "
            f"{ratio} | {p50 / block_s:.2f} | {'yes' if t.realtime else 'no'} |")


def _fixed_costs(timings: list[Timing], offline: dict) -> list[str]:
    """A least-squares line through each stateful engine's p50 against the block's duration:
    its intercept is the cost every step pays whatever its length (reading the big layers'
    weights, calling the layers), its slope the cost per second of audio."""
    lines = []
    for engine, threads in sorted({(t.engine, t.threads) for t in timings
                                   if t.stream == "stateful"}, key=str):
        rows = [t for t in timings if (t.engine, t.stream, t.threads) ==
                (engine, "stateful", threads)]
        if len(rows) < 2:
            continue
        block_s = [t.geometry.block / t.geometry.sample_rate for t in rows]
        slope, intercept = np.polyfit(block_s, [t.percentile(50) * MS_PER_S for t in rows], 1)
        lines.append(f"- stateful {engine} with {threads} thread(s), p50 ≈ "
                     f"{intercept:.0f} ms per step + {slope:.0f} ms per s of audio (offline "
                     f"{np.mean(offline.get((engine, threads), [np.nan])):.0f} ms per s)")
    return lines


def report(arch: str, device: str, latency_frames: tuple[int, ...], timings: list[Timing],
           info: dict, long_runs: list[str], n_blocks: int, wall: float,
           load: tuple[str, str], rounds: int = ROUNDS) -> str:
    field, offline = info["field"], info["offline"]
    lines = [
        f"## streaming denoise (`bench/stream.py`), {dt.date.today()}, commit {git_commit()}",
        "",
        f"**{RANDOM_INIT_BANNER}** Compute times are those of the real "
        f"{'DAC-16k' if arch == 'dac16k' else arch} architecture; the denoiser is a small "
        f"random-init one (width {DENOISER['width']}, depth {DENOISER['depth']}, grn "
        f"{DENOISER['grn']}: ±{field.denoiser} frames).",
        "",
        f"Machine: {_device_name(device)}; 2 CPU cores shared with other jobs (noisy timings; "
        f"ratios measured side by side are what count), {platform.machine()}, torch "
        f"{torch.__version__}, onnxruntime {_ort_version()}. Receptive field: "
        f"{field.describe()}. Whole run {wall / 60:.1f} min; load average {load[0]} at the "
        f"start, {load[1]} at the end.",
        "",
        "| block ms | lookahead ms | latency ms (block + lookahead) | windowed stream's window "
        "ms (context + block + lookahead) |",
        "|---:|---:|---:|---:|",
    ]
    for frames in latency_frames:
        g = StreamGeometry.for_field(field, frames)
        lines.append(f"| {g.block_ms:.0f} | {g.ms(g.lookahead):.0f} | {g.latency_ms:.0f} | "
                     f"{g.ms(g.window):.0f} |")
    lines += ["", "Offline reference (one forward over "
              f"{OFFLINE_SECONDS:.0f} s of the speech before each block size's rows, once per "
              "round among the streams' runs and after them; a row's reference is their "
              "median): "
              + ", ".join(f"{e} {n} thread(s) {min(v):.0f}–{max(v):.0f} ms per s of audio"
                          for (e, n), v in offline.items()) + ".", "",
              f"Per-block compute ({n_blocks} blocks per row, paced as a live source: in "
              f"{rounds} runs per stream, the streams' runs alternating, each run after a "
              f"{PARK_S:g} s pause and {WARMUP_BLOCKS} untimed push, block k pushed k block "
              "durations after the run's start or at once when the previous push ran late; "
              f"p99 of {n_blocks} is about their maximum). ÷ offline = p50 / the same engine's "
              "offline cost of the block's audio; RTF = p50 / block duration.", "",
              "| engine | stream | threads | block ms | latency ms | p50 ms | p99 ms | "
              "÷ offline | stateful ÷ windowed (p50) | RTF | real time (p99 < block) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    order = {k: i for i, k in enumerate(STREAMS)}
    for t in sorted(timings, key=lambda t: (str(t.threads), t.engine, order[t.stream],
                                            t.geometry.block)):
        lines.append(_row(t, timings))
    lines.append("")
    for key in sorted({(t.engine, t.stream, t.threads) for t in timings}, key=str):
        rows = [t for t in timings if (t.engine, t.stream, t.threads) == key and t.realtime]
        best = min(rows, key=lambda t: t.geometry.block, default=None)
        lines.append(f"- smallest real-time block, {key[0]} {key[1]} with {key[2]} thread(s): "
                     + (f"{best.geometry.block_ms:.0f} ms (latency {best.geometry.latency_ms:.0f}"
                        " ms)" if best else "none of the blocks measured"))
    lines += _fixed_costs(timings, offline)
    if rounds > ROUNDS:
        lines += [f"- {t.engine} {t.stream}, {t.threads} thread(s), {t.geometry.block_ms:.0f} ms: "
                  f"÷ offline per round {min(r):.2f}–{max(r):.2f} (median {np.median(r):.2f}, "
                  f"{len(r)} rounds)" for t in timings if t.stream == "stateful"
                  for r in [t.per_round_ratios()]]
    worst = min(info["agreement"].values()) if info["agreement"] else float("nan")
    for kind, export in info["exports"].items():
        lines.append(f"- exported {kind} graph: {export.size_bytes / 2**20:.0f} MiB, "
                     f"onnxruntime vs torch max abs difference {export.max_abs_diff:.2g} (SNR "
                     f"{export.snr_db:.0f} dB)")
    lines.append(f"- the streams' outputs agree with each other to ≥ {worst:.0f} dB SNR")
    return "\n".join(lines + long_runs + [""])


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch), CPU for the rest"
    return "CPU"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    from bench import stream_long

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS,
                        help="timed blocks per engine, block size and thread count")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (torch on the GPU; "
                        "onnxruntime too where its CUDA provider is installed)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny codec, few block sizes and blocks; never appended")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="a full graph already exported from this benchmark's models "
                             "(bench_models of the same architecture): skips that export")
    parser.add_argument("--onnx-step", type=Path, default=None,
                        help="the same for the streaming step (export --full --streaming)")
    parser.add_argument("--memory-arch", default=stream_long.MEMORY_ARCH, help="tiny | dac16k")
    parser.add_argument("--memory-seconds", type=float, default=stream_long.MEMORY_SECONDS)
    parser.add_argument("--block-ms", type=str, default=None,
                        help="comma-separated block sizes (ms) to time with all four streams, "
                             "instead of the default set (no stateful-only rows then)")
    parser.add_argument("--stateful-only", action="store_true",
                        help="with --block-ms: time only the stateful streams at those sizes")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="runs per stream and block size (the streams' runs alternate; "
                             "an offline reference is measured in each round)")
    parser.add_argument("--no-long", action="store_true",
                        help="skip the end-to-end and memory runs")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    arch, frames, latency = "dac16k", (SIDE_BY_SIDE_FRAMES, STATEFUL_FRAMES), LATENCY_FRAMES
    threads, blocks = THREADS, args.blocks
    e2e_seconds, memory_seconds = stream_long.E2E_SECONDS, args.memory_seconds
    e2e_repeats = stream_long.E2E_REPEATS
    if args.smoke:
        arch, frames = SMOKE["arch"], (SMOKE["side_by_side"], SMOKE["stateful"])
        latency, threads = SMOKE["latency"], SMOKE["threads"]
        blocks, e2e_seconds = min(args.blocks, SMOKE["blocks"]), SMOKE["e2e_seconds"]
        e2e_repeats = SMOKE["e2e_repeats"]
        memory_seconds = min(memory_seconds, SMOKE["memory_seconds"])
    if args.stateful_only and not args.block_ms:
        parser.error("--stateful-only needs --block-ms")
    if args.block_ms:
        sizes = tuple(int(round(float(v) / HOP_MS)) for v in args.block_ms.split(","))
        frames = ((), sizes) if args.stateful_only else (sizes, ())
    start, load_start = time.perf_counter(), load_average()
    long_runs: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        timings, info = run(arch, args.device, frames, threads, blocks, Path(tmp),
                            (args.onnx, args.onnx_step), args.rounds)
        if not args.no_long:
            torch.set_num_threads(1)
            codec, model, x = bench_models(arch)
            e2e = stream_long.e2e_rows(Enhancer(codec, model), x, arch, e2e_seconds, Path(tmp),
                                       e2e_repeats)
            long_runs += stream_long.e2e_lines(e2e)
    if not args.no_long:
        memory = stream_long.memory_rows(args.memory_arch, memory_seconds)
        long_runs += stream_long.memory_lines(memory)
    text = report(arch, args.device, latency, timings, info, long_runs, blocks,
                  time.perf_counter() - start, (load_start, load_average()), args.rounds)
    print(text)
    if not (args.no_append or args.smoke):
        append_benchmarks(text)


if __name__ == "__main__":
    main()

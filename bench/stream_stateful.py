"""Stateful vs windowed streaming: per-block compute against the offline cost of the same audio,
the end-to-end cost of ``cleancodec denoise --stream`` against ``cleancodec denoise``, and the
memory of a long stream.

Models: those of ``bench/stream.py`` (the real DAC-16k architecture at RANDOM INIT, a small
random-init ``grn: none`` denoiser), so the compute times are those of the real networks.

1. Blocks: the windowed stream (``infer.stream``: the whole chain over ``context + block +
   lookahead`` per block) and the stateful one (``infer.stateful``: layer state, the chain over
   the block's own samples) are fed the same noisy speech one block at a time, alternating,
   with ``bench.stream``'s pause before each push, at 100 and 200 ms; the stateful one alone at
   the other block sizes (the windowed one needs seconds per 20 ms block there). The offline
   cost is one forward of the torch ``Enhancer`` over :data:`OFFLINE_SECONDS` of the same
   speech, measured between the rows, as milliseconds per second of audio: "÷ offline" divides
   a block's p50 by that cost for the block's duration.
2. End to end: ``cleancodec denoise`` and ``cleancodec denoise --stream`` of the same 30 s file
   (16-bit WAV, default block), one process each, alternating, :data:`E2E_REPEATS` times.
3. Memory: a child process streams :data:`MEMORY_SECONDS` of synthetic noise through the
   stateful stream in pushes of :data:`MEMORY_PUSH` samples and samples its resident set
   (RSS) every :data:`MEMORY_EVERY_S` seconds of audio.

Usage: ``python bench/stream_stateful.py [--blocks 16] [--smoke] [--no-append]
[--memory-arch tiny] [--memory-seconds 600]``; prints Markdown and appends it to BENCHMARKS.md
(``--smoke``: the tiny codec, a few blocks, never appended).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_benchmarks, git_commit  # noqa: E402
from bench.denoise import load_average, noisy_speech  # noqa: E402
from bench.stream import (  # noqa: E402
    DENOISER,
    MS_PER_S,
    PARK_S,
    WARMUP_BLOCKS,
    Timing,
    small_denoiser,
    time_blocks,
)
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, load_codec  # noqa: E402
from cleancodec.infer.denoise import Enhancer  # noqa: E402
from cleancodec.infer.receptive import codec_chain_field  # noqa: E402
from cleancodec.infer.stateful import StatefulStream  # noqa: E402
from cleancodec.infer.stream import DEFAULT_BLOCK_MS, StreamDenoiser  # noqa: E402
from cleancodec.trainer.checkpoint import FORMAT_VERSION, save_atomic  # noqa: E402

SIDE_BY_SIDE_FRAMES = (5, 10)  # 100, 200 ms: windowed and stateful alternating
STATEFUL_FRAMES = (1, 2, 3, 25, 50)  # 20, 40, 60, 500, 1000 ms: stateful alone
THREADS = (1, 2)
DEFAULT_BLOCKS = 16
SPEECH_SECONDS, SPEECH_SEED, STATS_SECONDS = 30.0, 4, 5  # as bench/stream.py
OFFLINE_SECONDS = 10.0  # audio of the offline reference forward
E2E_SECONDS, E2E_REPEATS = 30.0, 2
MEMORY_SECONDS, MEMORY_PUSH, MEMORY_EVERY_S = 600.0, 3200, 30.0
MEMORY_ARCH = "tiny"
SMOKE = {"arch": "tiny", "blocks": 3, "threads": (1,), "stateful": (1, 25),
         "memory_seconds": 60.0, "e2e_seconds": 5.0}
KIB_PER_MIB = 1024


def bench_models(arch: str, threads: int) -> tuple[Enhancer, np.ndarray]:
    """``bench/stream.py``'s codec, denoiser and speech, as an ``Enhancer``."""
    codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                   device="cpu", num_threads=threads))
    x = noisy_speech(SPEECH_SECONDS, SPEECH_SEED)
    model = small_denoiser(codec.latent_dim, codec.encode(x[: STATS_SECONDS * codec.sample_rate]))
    return Enhancer(codec, model), x


def offline_ms_per_s(enh: Enhancer, x: np.ndarray) -> float:
    """Milliseconds of one offline forward per second of audio (after one warm-up)."""
    n = int(OFFLINE_SECONDS * enh.sample_rate)
    enh(x[None, : enh.sample_rate])
    start = time.perf_counter()
    enh(x[None, :n])
    return (time.perf_counter() - start) * MS_PER_S / OFFLINE_SECONDS


def block_rows(enh: Enhancer, x: np.ndarray, threads: tuple[int, ...], n_blocks: int,
               stateful_frames: tuple[int, ...]) -> tuple[list[Timing], dict]:
    """Per-block timings of both engines, and the offline cost per thread count."""
    timings, offline, agreement = [], {}, {}
    for n in threads:
        torch.set_num_threads(n)
        offline[n] = offline_ms_per_s(enh, x)
        for frames in SIDE_BY_SIDE_FRAMES:
            streams = {"windowed": StreamDenoiser.for_engine(enh, block_frames=frames),
                       "stateful": StatefulStream.for_engine(enh, block_frames=frames)}
            times, agreement[(n, frames)] = time_blocks(streams, x, n_blocks)
            g = streams["stateful"].geometry
            timings += [Timing(k, n, g, v) for k, v in times.items()]
            _progress(timings[-2:], n)
        for frames in stateful_frames:
            stream = StatefulStream.for_engine(enh, block_frames=frames)
            times, _ = time_blocks({"stateful": stream}, x, n_blocks)
            timings.append(Timing("stateful", n, stream.geometry, times["stateful"]))
            _progress(timings[-1:], n)
        offline[n] = (offline[n] + offline_ms_per_s(enh, x)) / 2  # before and after the rows
    return timings, {"offline": offline, "agreement": agreement}


def _progress(rows: list[Timing], threads: int) -> None:
    print(f"  {threads} thread(s), block {rows[0].geometry.block_ms:.0f} ms: "
          + ", ".join(f"{t.engine} p50 {t.percentile(50) * MS_PER_S:.0f} ms" for t in rows),
          file=sys.stderr, flush=True)


# --- end to end -------------------------------------------------------------------------------


def e2e_rows(enh: Enhancer, x: np.ndarray, arch: str, seconds: float, tmp: Path) -> dict:
    """Wall seconds of ``cleancodec denoise`` and ``cleancodec denoise --stream`` on one file
    (one thread each, alternating, :data:`E2E_REPEATS` times)."""
    wav, ckpt = tmp / "e2e.wav", tmp / "best.pt"
    sf.write(wav, np.tile(x, 2)[: int(seconds * enh.sample_rate)], enh.sample_rate,
             subtype="PCM_16")
    model = enh.denoiser
    save_atomic({"format_version": FORMAT_VERSION, "model_args": dict(model.model_args),
                 "denoiser": model.state_dict(), "step": 0, "config": {},
                 "codec_identity": enh.codec.identity, "val": {}}, ckpt)
    common = ["--codec", "random", "--checkpoint", str(ckpt), "--threads", "1",
              f"codec.random_arch={arch}"]
    commands = {"denoise": ["denoise", str(wav), str(tmp / "files.wav"), "--quiet", *common],
                "denoise --stream": ["denoise", "--stream", str(wav), str(tmp / "stream.wav"),
                                     *common]}
    walls: dict[str, list[float]] = {k: [] for k in commands}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for _ in range(E2E_REPEATS):
        for name, args in commands.items():
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "cleancodec", *args], cwd=REPO,
                                  capture_output=True, text=True, env=env)
            walls[name].append(time.perf_counter() - start)
            if proc.returncode:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
            if name.endswith("--stream") and "stateful" not in proc.stderr:
                raise SystemExit(f"{name} did not use the stateful stream:\n{proc.stderr}")
    return {"seconds": seconds, "walls": walls}


# --- memory -----------------------------------------------------------------------------------


def rss_mib() -> float:
    """Resident set of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / KIB_PER_MIB
    return float("nan")


def memory_child(arch: str, seconds: float) -> None:
    """Stream ``seconds`` of noise through the stateful stream; print RSS samples as JSON."""
    torch.set_num_threads(1)
    codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                   device="cpu", num_threads=1))
    rng = np.random.default_rng(0)
    model = small_denoiser(codec.latent_dim, codec.encode(
        (0.1 * rng.standard_normal(codec.sample_rate)).astype(np.float32)))
    stream = StatefulStream.for_engine(Enhancer(codec, model), block_ms=DEFAULT_BLOCK_MS)
    every = int(MEMORY_EVERY_S * codec.sample_rate)
    total, samples, start = int(seconds * codec.sample_rate), [], time.perf_counter()
    for pushed in range(0, total, MEMORY_PUSH):
        stream.push((0.1 * rng.standard_normal(MEMORY_PUSH)).astype(np.float32))
        if (pushed + MEMORY_PUSH) % every < MEMORY_PUSH:
            samples.append([(pushed + MEMORY_PUSH) / codec.sample_rate, rss_mib()])
    stream.flush()
    print(json.dumps({"samples": samples, "wall": time.perf_counter() - start}))


def memory_rows(arch: str, seconds: float) -> dict:
    """RSS over a long stream, measured in a fresh process."""
    proc = subprocess.run([sys.executable, __file__, "--memory-child", arch, str(seconds)],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode:
        raise SystemExit(f"memory child failed:\n{proc.stderr[-2000:]}")
    return {"arch": arch, "seconds": seconds, **json.loads(proc.stdout.strip().splitlines()[-1])}


# --- report -----------------------------------------------------------------------------------


def report(arch: str, timings: list[Timing], info: dict, e2e: dict, memory: dict,
           n_blocks: int, wall: float, load: tuple[str, str], field) -> str:
    offline = info["offline"]
    lines = [
        f"## stateful vs windowed streaming (`bench/stream_stateful.py`), {dt.date.today()}, "
        f"commit {git_commit()}", "",
        f"**{RANDOM_INIT_BANNER}** Compute times are those of the real "
        f"{'DAC-16k' if arch == 'dac16k' else arch} architecture; denoiser width "
        f"{DENOISER['width']}, depth {DENOISER['depth']}, grn {DENOISER['grn']}.", "",
        f"Machine: CPU, 2 cores shared with other jobs (noisy timings; ratios measured side by "
        f"side are what count), {platform.machine()}, torch {torch.__version__}. Receptive "
        f"field: {field.describe()}. Whole run {wall / 60:.1f} min; load average {load[0]} at "
        f"the start, {load[1]} at the end.", "",
        "Offline reference (one forward over "
        f"{OFFLINE_SECONDS:.0f} s, mean of before and after the rows): "
        + ", ".join(f"{n} thread(s) {v:.0f} ms per s of audio" for n, v in offline.items())
        + ".", "",
        f"Per-block compute ({n_blocks} blocks per row after {WARMUP_BLOCKS} warm-up, a "
        f"{PARK_S:g} s pause before each push; windowed and stateful alternate block by block "
        "at 100 and 200 ms). ÷ offline = p50 / offline cost of the block's audio; RTF = p50 / "
        "block duration.", "",
        "| engine | threads | block ms | latency ms | p50 ms | p99 ms | ÷ offline | "
        "stateful ÷ windowed (p50) | RTF | real time (p99 < block) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    p50 = {(t.engine, t.threads, t.geometry.block): t.percentile(50) for t in timings}
    for t in sorted(timings, key=lambda t: (str(t.threads), t.geometry.block, t.engine)):
        g = t.geometry
        block_s = g.block / g.sample_rate
        ratio = ""
        windowed = p50.get(("windowed", t.threads, g.block))
        if t.engine == "stateful" and windowed:
            ratio = f"{t.percentile(50) / windowed:.3f}"
        lines.append(
            f"| {t.engine} | {t.threads} | {g.block_ms:.0f} | {g.latency_ms:.0f} | "
            f"{t.percentile(50) * MS_PER_S:.1f} | {t.percentile(99) * MS_PER_S:.1f} | "
            f"{t.percentile(50) * MS_PER_S / (offline[t.threads] * block_s):.2f} | {ratio} | "
            f"{t.percentile(50) / block_s:.2f} | {'yes' if t.realtime else 'no'} |")
    lines.append("")
    for n in sorted({t.threads for t in timings}, key=str):
        for engine in ("stateful", "windowed"):
            rows = [t for t in timings if (t.engine, t.threads) == (engine, n) and t.realtime]
            best = min(rows, key=lambda t: t.geometry.block, default=None)
            lines.append(f"- smallest real-time block, {engine} with {n} thread(s): "
                         + (f"{best.geometry.block_ms:.0f} ms (latency "
                            f"{best.geometry.latency_ms:.0f} ms)" if best
                            else "none of the blocks measured"))
    worst = min(info["agreement"].values())
    lines.append(f"- windowed and stateful outputs agree to ≥ {worst:.0f} dB SNR")
    walls = {k: float(np.median(v)) for k, v in e2e["walls"].items()}
    lines += ["", f"End to end, one {e2e['seconds']:.0f} s 16-bit WAV, 1 thread, process start "
              f"to exit (median of {E2E_REPEATS}, alternating): `cleancodec denoise` "
              f"{walls['denoise']:.1f} s, `cleancodec denoise --stream` (block "
              f"{DEFAULT_BLOCK_MS:.0f} ms, stateful) {walls['denoise --stream']:.1f} s: ratio "
              f"{walls['denoise --stream'] / walls['denoise']:.2f}."]
    rss = np.array([r for _, r in memory["samples"]])
    half = len(rss) // 2
    lines += ["", f"Memory: {memory['seconds'] / 60:.0f} min of audio through one stateful "
              f"stream ({memory['arch']} codec, block {DEFAULT_BLOCK_MS:.0f} ms, pushes of "
              f"{MEMORY_PUSH} samples, {memory['wall']:.0f} s wall): RSS "
              f"{rss[0]:.1f} MiB after {memory['samples'][0][0]:.0f} s, peak {rss.max():.1f} "
              f"MiB, last {rss[-1]:.1f} MiB; peak of the second half − peak of the first half "
              f"{rss[half:].max() - rss[:max(1, half)].max():+.1f} MiB.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny codec, a few blocks, short end-to-end and memory runs")
    parser.add_argument("--memory-arch", default=MEMORY_ARCH, help="tiny | dac16k")
    parser.add_argument("--memory-seconds", type=float, default=MEMORY_SECONDS)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], float(args.memory_child[1]))
        return
    arch, blocks, threads, stateful = "dac16k", args.blocks, THREADS, STATEFUL_FRAMES
    memory_seconds, e2e_seconds = args.memory_seconds, E2E_SECONDS
    if args.smoke:
        arch, blocks, threads = SMOKE["arch"], min(blocks, SMOKE["blocks"]), SMOKE["threads"]
        stateful, e2e_seconds = SMOKE["stateful"], SMOKE["e2e_seconds"]
        memory_seconds = min(memory_seconds, SMOKE["memory_seconds"])
    start, load_start = time.perf_counter(), load_average()
    enh, x = bench_models(arch, max(threads))
    field = codec_chain_field(enh.codec, enh.denoiser)
    timings, info = block_rows(enh, x, threads, blocks, stateful)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        e2e = e2e_rows(enh, x, arch, e2e_seconds, Path(tmp))
    memory = memory_rows(args.memory_arch, memory_seconds)
    text = report(arch, timings, info, e2e, memory, blocks, time.perf_counter() - start,
                  (load_start, load_average()), field)
    print(text)
    if not (args.no_append or args.smoke):
        append_benchmarks(text)


if __name__ == "__main__":
    main()

"""Cache-stage benchmark: encoder throughput, full builds per storage, bytes, read speed.

Runs on the real DAC-16k architecture at RANDOM INIT (no pretrained weights are needed, or
downloadable, on the benchmark machine): speeds are those of the real network, latents are
meaningless, and compressed sizes may differ from those of real latents.

Figures, all measured side by side in one run (the machine may be shared and noisy):

- encoder only: audio seconds encoded per wall second, fp32 and bf16 autocast;
- full build, per storage: encoded audio seconds (clean + noisy streams) per wall second of the
  mix → encode → write phase, and its ratio to the bare fp32 encoder (goal ≥ 0.9: mixing and
  writing hidden behind encoding), plus the whole run including codec load and input checks;
- bytes on disk per hour of window audio, per storage;
- read throughput, windows per second: zarr random access, webdataset sequential.

On a machine with CUDA the encoder and build figures are repeated on the GPU.

Usage: ``python bench/cache.py [--encode-windows 16] [--build-windows 8] [--threads 2]``;
prints a Markdown table and appends it to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import git_commit, publish  # noqa: E402
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, load_codec  # noqa: E402
from cleancodec.datagen.synth import make_tiny_corpus  # noqa: E402
from cleancodec.pipeline.build import CacheConfig, build_cache  # noqa: E402
from cleancodec.pipeline.manifest import load_manifest  # noqa: E402
from cleancodec.pipeline.mix import MixConfig  # noqa: E402
from cleancodec.trainer.data import ZarrWindows, iter_tar_windows, open_split  # noqa: E402

WINDOW_SECONDS = 3.0
SAMPLE_RATE = 16000
CODEC_SEED = 0
CORPUS_SEED = 0
READ_MIN_SECONDS = 2.0
GOAL_RATIO = 0.9


def codec_config(device: str, bf16: bool, threads: int, batch: int) -> CodecConfig:
    return CodecConfig(weights="random", random_seed=CODEC_SEED, random_arch="dac16k",
                       device=device, bf16=bf16, batch_size=batch, num_threads=threads)


def synth_windows(n: int, seed: int = 0) -> np.ndarray:
    """``[n x T]`` speech-like windows (the synthetic corpus generator, not noise)."""
    from cleancodec.datagen.synth import synth_utterance

    return np.stack([synth_utterance(seed, i % 4, i, WINDOW_SECONDS, SAMPLE_RATE)
                     for i in range(n)])


def encoder_rate(cfg: CodecConfig, waves: np.ndarray) -> float:
    """Audio seconds per wall second of ``Codec.encode_batched`` (after one warm-up batch)."""
    codec = load_codec(cfg)
    codec.encode_batched(waves[: cfg.batch_size])
    if codec.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    codec.encode_batched(waves)
    if codec.device.type == "cuda":
        torch.cuda.synchronize()
    return waves.shape[0] * WINDOW_SECONDS / (time.perf_counter() - start)


def run_build(storage: str, cfg: CodecConfig, corpus, windows: int, out: Path):
    cache_cfg = CacheConfig(storage=storage, train_windows=windows, val_windows=0,
                            windows_per_shard=max(1, windows // 4), seed=1, noisy_per_clean=1,
                            mix=MixConfig(window_seconds=WINDOW_SECONDS))
    start = time.perf_counter()
    summary = build_cache(cache_cfg, cfg, corpus.clean_dir, corpus.noise_dir, out_dir=out,
                          progress=False)
    return summary, time.perf_counter() - start


def read_rate_zarr(cache: Path) -> float:
    """Windows/s of random single-window reads through the trainer's zarr dataset."""
    src = open_split(cache, load_manifest(cache), "train")
    reader = ZarrWindows(src.zarr_path, src.rows)
    order = list(range(len(reader)))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < READ_MIN_SECONDS:
        random.shuffle(order)
        for i in order:
            reader[i]
            count += 1
    return count / (time.perf_counter() - start)


def read_rate_wds(cache: Path) -> float:
    """Windows/s of sequential reads of every tar through the trainer's tar decoding."""
    src = open_split(cache, load_manifest(cache), "train")
    shape = (src.latent_dim, src.frames)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < READ_MIN_SECONDS:
        for _ in iter_tar_windows(src.shards, shape):
            count += 1
    return count / (time.perf_counter() - start)


def encoder_speedup(cfg: CodecConfig, waves: np.ndarray, reps: int = 2) -> tuple[float, float]:
    """Audio s per wall s of the DAC-16k encoder as dac builds it (weight norm recomputed every
    forward, Snake with four temporaries) and as the codec loads it (weight norm folded, Snake
    in place), interleaved, the fastest of ``reps`` runs each. Their latents are equal."""
    from cleancodec.core.codec import _build_dac, resolve_arch

    codec = load_codec(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.random_seed)
        plain = _build_dac(resolve_arch(cfg.random_arch)).to(codec.device).eval()
    x = torch.from_numpy(waves)[:, None].to(codec.device)
    runs = {"dac": (lambda b: plain.encoder(b)), "prepared": (lambda b: codec.model.encoder(b))}
    best = {k: float("inf") for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn(x[: cfg.batch_size])
        for _ in range(reps):
            for name, fn in runs.items():
                start = time.perf_counter()
                for i in range(0, len(x), cfg.batch_size):
                    fn(x[i:i + cfg.batch_size])
                if codec.device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    audio = waves.shape[0] * WINDOW_SECONDS
    return audio / best["dac"], audio / best["prepared"]


DEMO_PROFILE = REPO / "conf" / "demo.yaml"
DEMO_CORPUS = REPO / "data" / "demo"
PAIR_LATENTS_K1 = 2  # latents stored and encoded per training pair with one noise per window


def demo_cache_stage(work: Path, scale: float, threads: int) -> list[tuple[str, str, str, str]]:
    """The ``make demo`` cache stage before (one noisy latent per clean window, the encoder as
    dac builds it) and now (the profile's ``noisy_per_clean``, the prepared encoder), for the
    same number of training pairs, side by side; ``scale`` shrinks both alike."""
    from cleancodec.core import codec as codec_mod
    from cleancodec.core.config import load_section

    now = load_section(DEMO_PROFILE, "cache", CacheConfig)
    K = now.noisy_per_clean
    pairs = {s: max(1, round(getattr(now, f"{s}_windows") * K * scale)) for s in ("train", "val")}
    if DEMO_CORPUS.is_dir():
        clean, noise, what = DEMO_CORPUS / "clean", DEMO_CORPUS / "noise", "demo corpus"
    else:
        corpus = make_tiny_corpus(work / "demo-corpus", seed=CORPUS_SEED, speakers=4,
                                  clips_per_speaker=4, clip_seconds=6.0, noise_seconds=8.0)
        clean, noise, what = corpus.clean_dir, corpus.noise_dir, "synthetic corpus"
    codec_cfg = CodecConfig(weights="random", device="cpu", num_threads=threads)
    runs = {"before": (1, lambda model: 0), "now": (K, codec_mod.prepare_for_inference)}
    out = {}
    for name, (k, prepare) in runs.items():
        cfg = CacheConfig(clean=str(clean), noise=str(noise), noisy_per_clean=k,
                          train_windows=pairs["train"] // k, val_windows=pairs["val"] // k,
                          windows_per_shard=max(1, now.windows_per_shard * K // k))
        original = codec_mod.prepare_for_inference
        codec_mod.prepare_for_inference = prepare
        try:
            start = time.perf_counter()
            summary = build_cache(cfg, codec_cfg, clean, noise, out_dir=work / f"demo-{name}",
                                  progress=False)
            out[name] = (time.perf_counter() - start, summary, k)
        finally:
            codec_mod.prepare_for_inference = original
    rows = []
    for name, (wall, summary, k) in out.items():
        n_pairs = sum(summary.windows.values()) * k
        encodes = sum(summary.windows.values()) * (1 + k) / n_pairs
        rows.append((f"demo cache stage, {name}: K = {k}, {n_pairs} pairs ({what}, "
                     f"scale {scale:g}); encodes per pair {encodes:.2f}, bytes per pair "
                     f"{summary.bytes / n_pairs / 1e3:.0f} KB (last column: vs before)",
                     f"{wall:.0f}", "s", f"{wall / out['before'][0]:.2f}"))
    return rows


def bench_device(device: str, args, corpus, work: Path) -> list[tuple[str, str, str, str]]:
    """Rows ``(measurement, value, unit, ratio to the bare fp32 encoder)`` for one device."""
    threads = args.threads if device == "cpu" else 0
    waves = synth_windows(args.encode_windows)
    fp32 = codec_config(device, False, threads, args.batch)
    rows = []
    enc_before = encoder_rate(fp32, waves)
    enc_bf16 = encoder_rate(codec_config(device, True, threads, args.batch), waves)
    enc_dac, enc_prepared = encoder_speedup(fp32, waves)
    builds = {s: run_build(s, fp32, corpus, args.build_windows, work / f"{device}-{s}")
              for s in ("zarr", "webdataset")}
    enc_after = encoder_rate(fp32, waves)
    enc = (enc_before + enc_after) / 2
    tag = device.upper()
    rows.append((f"{tag} encoder only, fp32 (mean of before/after builds: "
                 f"{enc_before:.2f} / {enc_after:.2f})", f"{enc:.2f}", "audio s / wall s", "1.00"))
    rows.append((f"{tag} encoder only, bf16 autocast", f"{enc_bf16:.2f}", "audio s / wall s",
                 f"{enc_bf16 / enc:.2f}"))
    rows.append((f"{tag} encoder as dac builds it (weight norm every forward, allocating "
                 f"Snake) → as loaded (folded, in-place Snake): speed-up "
                 f"{enc_prepared / enc_dac:.2f}×", f"{enc_dac:.2f} → {enc_prepared:.2f}",
                 "audio s / wall s", ""))
    for storage, (summary, wall) in builds.items():
        encoded = 2 * summary.windows["train"] * WINDOW_SECONDS
        phase = encoded / summary.shard_seconds
        rows.append((f"{tag} build {storage}: mix → encode → write", f"{phase:.2f}",
                     "encoded audio s / wall s", f"{phase / enc:.2f}"))
        rows.append((f"{tag} build {storage}: whole run (codec load, input check, manifest)",
                     f"{encoded / wall:.2f}", "encoded audio s / wall s",
                     f"{encoded / wall / enc:.2f}"))
    if device == "cpu":
        for storage, (summary, _) in builds.items():
            rows.append((f"bytes per audio-hour, {storage} (float16, clean + noisy)",
                         f"{summary.bytes_per_audio_hour / 1e6:.1f}", "MB / audio-hour", ""))
        rows.append(("read zarr, random windows",
                     f"{read_rate_zarr(builds['zarr'][0].out_dir):.0f}", "windows / s", ""))
        rows.append(("read webdataset, sequential",
                     f"{read_rate_wds(builds['webdataset'][0].out_dir):.0f}", "windows / s", ""))
    return rows


def table(rows, args, devices) -> str:
    today = dt.date.today().isoformat()
    lines = [
        f"## cache stage (`bench/cache.py`), {today}, commit {git_commit()}",
        "",
        f"Machine: {os.cpu_count()} CPU cores shared with other jobs (noisy timings), "
        f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"CPU torch threads {args.threads}; devices: {', '.join(devices)}.",
        f"Codec: real DAC-16k architecture at **RANDOM INIT** (seed {CODEC_SEED}) — "
        "speeds are the real network's; latents are meaningless and compress differently "
        "from real ones.",
        f"Encoder: {args.encode_windows} windows of {WINDOW_SECONDS:g} s, batch {args.batch}. "
        f"Builds: {args.build_windows} windows of {WINDOW_SECONDS:g} s from the synthetic "
        "corpus, 4 shards; build rates count both encoded streams (clean + noisy), so cache "
        "audio-hours per hour are half of them. Ratio = figure / bare fp32 encoder "
        f"(goal for the build phase: ≥ {GOAL_RATIO}).",
        "",
        "| measurement | value | unit | vs encoder fp32 |",
        "|---|---:|---|---:|",
    ]
    lines += [f"| {m} | {v} | {u} | {r} |" for m, v, u, r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encode-windows", type=int, default=16)
    parser.add_argument("--build-windows", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--demo-scale", type=float, default=1.0,
                        help="share of the demo cache built for its before/now timing")
    parser.add_argument("--only-demo", action="store_true",
                        help="only the demo cache stage before/now")
    args = parser.parse_args()
    print(f"*** {RANDOM_INIT_BANNER} ***", file=sys.stderr)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory(prefix="cleancodec-bench-") as tmp:
        work = Path(tmp)
        corpus = make_tiny_corpus(work / "corpus", seed=CORPUS_SEED, speakers=4,
                                  clips_per_speaker=4, clip_seconds=6.0, noise_seconds=8.0)
        rows = demo_cache_stage(work, args.demo_scale, args.threads)
        if not args.only_demo:
            for device in devices:
                rows += bench_device(device, args, corpus, work)
    publish(table(rows, args, devices), args.out, not args.no_append)


if __name__ == "__main__":
    main()

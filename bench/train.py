"""Benchmark of the training step: cached latents vs. encoding audio inside every step.

Side by side in one run, on the real DAC-16k latent shape (1024 channels x 150 frames per 3 s
window):

- (a) **cached**: the trainer as shipped — read a batch from the latent cache (zarr, in the
  training process: its read time is part of the step), then the D and G updates.
- (b) **encode in step** (the seed's way): clean and noisy audio (``batch`` x 3 s each) go
  through the DAC-16k encoder (architecture of the release, RANDOM INIT: timings do not depend
  on the weights) inside every step, then the same D and G updates.

Each (mode, preset, batch) runs in its own subprocess so its peak RSS (``getrusage``) is its
own. Also measured: loader throughput (windows/s) of both cache formats vs. what a step
consumes. The cache is written with the pipeline's own shard writers, filled with synthetic
latents of the DAC-16k shape (step time does not depend on the values). On CUDA machines the
same comparison also runs with bf16 autocast at batch 64 and 256, with GPU peak memory.

    .venv/bin/python bench/train.py [--presets medium,large] [--batches 8,32] [--no-append]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_benchmarks, git_commit
from cleancodec.pipeline.manifest import FORMAT, FORMAT_VERSION, save_manifest
from cleancodec.pipeline.shards import (
    META_FIELDS,
    create_zarr_split,
    write_wds_shard,
    write_zarr_shard,
)
from cleancodec.trainer.config import DataConfig, TrainConfig, load_train_config

REPO = Path(__file__).resolve().parents[1]
LATENT_DIM, FRAMES, SAMPLE_RATE, HOP = 1024, 150, 16000, 320
WINDOW_SAMPLES = FRAMES * HOP                      # 3 s
CACHE_WINDOWS, WINDOWS_PER_SHARD = 256, 64
LOADER_WORKERS, LOADER_BATCH, LOADER_BATCHES = 2, 8, 24
CPU_BATCHES, GPU_BATCHES = (8, 32), (64, 256)
SPEEDUP_GOALS = {"medium": 15.0, "large": 6.0}     # (b) / (a) step time
MEMORY_GOAL, MEMORY_GOAL_BATCH = 0.7, 32           # (a) / (b) peak RSS at batch 32
HEADROOM_GOAL, HEADROOM_PRESET = 20.0, "large"     # loader windows/s over step consumption
KIB, MIB = 1024, 1024 * 1024
CODEC_SEED = 0
OMP_WAIT_POLICY = "PASSIVE"


# --- the bench cache -------------------------------------------------------------------------


def write_bench_cache(root: Path, storage: str, seed: int = 0) -> Path:
    """A cache of ``CACHE_WINDOWS`` synthetic float16 windows (train) + one val shard."""
    cache = root / storage
    cache.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, windows in (("train", CACHE_WINDOWS), ("val", WINDOWS_PER_SHARD)):
        if storage == "zarr":
            create_zarr_split(cache / f"{split}.zarr", windows, LATENT_DIM, FRAMES,
                              WINDOWS_PER_SHARD, dtype="float16")
        records = []
        for index in range(windows // WINDOWS_PER_SHARD):
            shape = (WINDOWS_PER_SHARD, LATENT_DIM, FRAMES)
            clean = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
            noisy = (clean + rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
            if storage == "zarr":
                meta = {k: np.zeros(WINDOWS_PER_SHARD, dtype=v) for k, v in META_FIELDS.items()}
                files = write_zarr_shard(cache, split, index, WINDOWS_PER_SHARD, clean, noisy, meta)
                name = f"{split}.zarr"
            else:
                files = [write_wds_shard(cache, split, index, clean, noisy,
                                         [{"snr_db": 0.0}] * WINDOWS_PER_SHARD)]
                name = files[0].path
            records.append({"index": index, "status": "done", "windows": WINDOWS_PER_SHARD,
                            "sha256": files[0].sha256, "file": name})
        info = {"windows": windows, "windows_per_shard": WINDOWS_PER_SHARD, "shards": records}
        info.update({"path": f"{split}.zarr"} if storage == "zarr"
                    else {"pattern": f"{split}-%06d.tar"})
        splits[split] = info
    save_manifest(cache, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "storage": storage,
        "codec": {"identity": {"kind": "random-init", "seed": CODEC_SEED, "arch_name": "dac16k",
                               "note": "bench: synthetic latents of the DAC-16k shape"},
                  "sample_rate": SAMPLE_RATE, "hop_length": HOP, "latent_dim": LATENT_DIM,
                  "n_codebooks": 12, "frame_rate": SAMPLE_RATE / HOP},
        "window": {"seconds": WINDOW_SAMPLES / SAMPLE_RATE, "samples": WINDOW_SAMPLES,
                   "frames": FRAMES},
        "dtype": "float16", "seed": seed, "config": {}, "splits": splits, "complete": True,
        "versions": {},
    })
    return cache


# --- one configuration (runs in its own subprocess) ------------------------------------------


def bench_config(preset: str, batch: int, device: str, bf16: bool,
                 activation_checkpointing: bool = False) -> TrainConfig:
    cfg = load_train_config(REPO / "conf" / "train.yaml", preset=preset)
    data = dataclasses.replace(cfg.data, batch_size=batch, num_workers=0, stats_windows=8)
    return dataclasses.replace(cfg, data=data, device=device, bf16=bf16, progress=False,
                               activation_checkpointing=activation_checkpointing,
                               steps=10 ** 6, log_every=10 ** 6, val_every=10 ** 6,
                               checkpoint_every=10 ** 6, milestones=[])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(spec: dict) -> dict:
    """Time ``spec["steps"]`` steps after ``spec["warmup"]``; returns seconds/step and peaks."""
    from cleancodec.core.topology import Topology, pick_device
    from cleancodec.trainer.loop import Trainer

    device = pick_device(spec["device"])
    cfg = bench_config(spec["preset"], spec["batch"], spec["device"], spec["bf16"],
                       spec.get("activation_checkpointing", False))
    trainer = Trainer(cfg, spec["cache"], Path(spec["run"]), Topology(device=device))
    trainer.prepare()
    if spec["mode"] == "cached":
        def step() -> None:
            trainer.train_step(trainer.next_batch())
    else:
        from cleancodec.core.codec import CodecConfig, load_codec

        codec = load_codec(CodecConfig(weights="random", random_seed=CODEC_SEED,
                                       random_arch="dac16k", device=str(device), bf16=spec["bf16"]))
        rng = np.random.default_rng(0)
        shape = (spec["batch"], WINDOW_SAMPLES)
        clean = torch.from_numpy(rng.uniform(-0.3, 0.3, shape).astype(np.float32))
        noisy = clean + torch.from_numpy(rng.uniform(-0.1, 0.1, shape).astype(np.float32))

        def step() -> None:
            trainer.train_step({"noisy": codec.encode(noisy), "clean": codec.encode(clean)})
    for _ in range(spec["warmup"]):
        if spec["mode"] == "cached":
            step()
        else:   # a full encode-in-step costs minutes at batch 32: warm both parts separately
            codec.encode(noisy[:1])
            trainer.train_step(trainer.next_batch())
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    out = {"step_s": float(np.median(times)), "cpu_s": float(np.median(cpu_times)),
           "steps": len(times),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / MIB
    trainer.logger.close()
    return out


def loader_throughput(cache: Path) -> float:
    """Windows/s of the training loader (``LOADER_WORKERS`` workers), after its first batch."""
    from cleancodec.pipeline.manifest import load_manifest
    from cleancodec.trainer.data import open_split, train_batches

    src = open_split(cache, load_manifest(cache), "train")
    cfg = DataConfig(batch_size=LOADER_BATCH, num_workers=LOADER_WORKERS,
                     shuffle_buffer=WINDOWS_PER_SHARD)
    it = train_batches(src, cfg, seed=0)
    next(it)
    t0 = time.perf_counter()
    for _ in range(LOADER_BATCHES):
        next(it)
    return LOADER_BATCHES * LOADER_BATCH / (time.perf_counter() - t0)


def in_subprocess(spec: dict) -> dict:
    # Sleeping (not spinning) OpenMP threads: on shared cores a spinning thread waiting for a
    # descheduled one can make a step several times slower at random; this keeps runs comparable.
    env = {"OMP_WAIT_POLICY": OMP_WAIT_POLICY, **os.environ}
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=REPO,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench configuration {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the report ------------------------------------------------------------------------------


def step_table(rows: list[dict], gpu: bool) -> list[str]:
    mem = "GPU peak MB" if gpu else "peak RSS MB"
    lines = [f"| preset | batch | (a) cached s/step | (b) encode-in-step s/step | speed-up b/a "
             f"| (a) CPU s | (b) CPU s | speed-up in CPU time | goal | (a) {mem} | (b) {mem} "
             f"| mem a/b | goal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in _with_checkpointing_rows(rows):
        a, b = r["a"], r["b"]
        key = "gpu_peak_mb" if gpu else "peak_rss_mb"
        speedup, cpu_speedup = b["step_s"] / a["step_s"], b["cpu_s"] / a["cpu_s"]
        goal = SPEEDUP_GOALS.get(r.get("goal_preset", r["preset"]), float("nan"))
        ratio = a[key] / b[key]
        mem_goal = f"≤ {MEMORY_GOAL}" if (gpu or r["batch"] == MEMORY_GOAL_BATCH) else "—"
        ok = "✓" if speedup >= goal else "✗"
        mem_ok = "" if mem_goal == "—" else (" ✓" if ratio <= MEMORY_GOAL else " ✗")
        lines.append(f"| {r['preset']} | {r['batch']} | {a['step_s']:.3f} | {b['step_s']:.2f} | "
                     f"**{speedup:.1f}×** | {a['cpu_s']:.2f} | {b['cpu_s']:.1f} | "
                     f"{cpu_speedup:.1f}× | ≥ {goal:g}× (wall) {ok} | {a[key]:.0f} | "
                     f"{b[key]:.0f} | **{ratio:.2f}** | {mem_goal}{mem_ok} |")
    return lines


def _with_checkpointing_rows(rows: list[dict]) -> list[dict]:
    """Rows as measured, each followed by its activation-checkpointing variant of (a), if any."""
    out = []
    for r in rows:
        out.append(r)
        if "a_ckpt" in r:
            out.append({**r, "preset": f"{r['preset']} + act. ckpt", "a": r["a_ckpt"],
                        "goal_preset": r["preset"]})
    return out


def loader_table(loaders: dict[str, float], rows: list[dict]) -> list[str]:
    lines = ["| format | workers | loader windows/s | step consumption windows/s "
             "(preset, batch) | headroom | goal |", "|---|---:|---:|---|---:|---:|"]
    for fmt, wps in loaders.items():
        for r in rows:
            need = r["batch"] / r["a"]["step_s"]
            goal = f"≥ {HEADROOM_GOAL:g}×" if r["preset"] == HEADROOM_PRESET else "—"
            ok = "" if goal == "—" else (" ✓" if wps / need >= HEADROOM_GOAL else " ✗")
            lines.append(f"| {fmt} | {LOADER_WORKERS} | {wps:.0f} | {need:.1f} ({r['preset']}, "
                         f"{r['batch']}) | {wps / need:.0f}× | {goal}{ok} |")
    return lines


def memory_note(rows: list[dict]) -> str:
    """What the cache saves in peak RSS at the memory-goal batch, and why the ratio varies."""
    saved = ", ".join(f"{r['preset']} {r['b']['peak_rss_mb'] - r['a']['peak_rss_mb']:.0f} MB"
                      for r in rows if r["batch"] == MEMORY_GOAL_BATCH)
    return (f"Peak RSS of (b) is the larger of its encoder pass (codec weights + encoder "
            f"activations) and its D/G step; (a) has only the D/G step. At batch "
            f"{MEMORY_GOAL_BATCH} the cache saves: {saved or 'n/a'}. Where the D/G step's own "
            f"activations dominate (the large model), that saving is a small share of the total; "
            f"`train.activation_checkpointing: true` (rows '+ act. ckpt') recomputes the "
            f"denoiser blocks in the backward pass instead of storing their activations.")


def report(rows: list[dict], gpu_rows: list[dict], loaders: dict[str, float], args) -> str:
    cpu = platform.processor() or platform.machine()
    head = [
        f"## training step, cached latents vs encoding in the step (`bench/train.py`), "
        f"{dt.date.today().isoformat()}, commit {git_commit()}",
        "",
        f"Machine: **2 CPU cores shared with other jobs** (noisy; compare the ratios, measured "
        f"side by side in one run), {cpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', OMP_WAIT_POLICY)}. "
        f"**DAC-16k architecture at RANDOM INIT** "
        f"(seed {CODEC_SEED}; step times do not depend on the weights). Windows of 3 s = "
        f"{LATENT_DIM} x {FRAMES} latents; the cache holds synthetic float16 latents of that "
        f"shape, written with the pipeline's shard writers. Median of {args.steps} timed steps "
        f"for (a) and {args.seed_steps} for (b), after {args.warmup} warm-up step(s) (for (b): "
        f"a 1-window encode plus one D/G step); (a) reads "
        f"its batch from the zarr cache inside the step (no loader workers); (b) encodes the "
        f"batch's clean and noisy audio with the DAC encoder, then runs the same D/G step. "
        f"Each configuration runs in its own process (peak RSS = that process). CPU s = "
        f"process CPU time per step (all threads): less sensitive than wall time to the other "
        f"jobs on the machine.",
        "",
        *step_table(rows, gpu=False),
        "",
        memory_note(rows),
        "",
        f"Loader throughput (train split, batch {LOADER_BATCH}, {LOADER_WORKERS} workers, "
        f"measured alone) against what one cached step consumes:",
        "",
        *loader_table(loaders, rows),
    ]
    if gpu_rows:
        head += ["", f"GPU ({torch.cuda.get_device_name(0)}), bf16 autocast:", "",
                 *step_table(gpu_rows, gpu=True)]
    return "\n".join(head) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="medium,large")
    parser.add_argument("--batches", default=",".join(map(str, CPU_BATCHES)))
    parser.add_argument("--steps", type=int, default=3, help="timed steps of (a)")
    parser.add_argument("--seed-steps", type=int, default=1, help="timed steps of (b)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--checkpointing", default="large:32",
                        help="preset:batch pairs whose (a) is also measured with "
                             "train.activation_checkpointing (comma-separated; '' for none)")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    presets = args.presets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    ckpt_pairs = {p for p in args.checkpointing.split(",") if p}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        caches = {fmt: write_bench_cache(root, fmt) for fmt in ("zarr", "webdataset")}
        loaders = {fmt: loader_throughput(cache) for fmt, cache in caches.items()}

        def pair(preset: str, batch: int, device: str, bf16: bool) -> dict:
            common = dict(preset=preset, batch=batch, device=device, bf16=bf16,
                          cache=str(caches["zarr"]), warmup=args.warmup)
            a = in_subprocess({**common, "mode": "cached", "steps": args.steps,
                               "run": str(root / f"a-{preset}-{batch}-{device}")})
            b = in_subprocess({**common, "mode": "encode", "steps": args.seed_steps,
                               "run": str(root / f"b-{preset}-{batch}-{device}")})
            row = {"preset": preset, "batch": batch, "a": a, "b": b}
            if device == "cpu" and f"{preset}:{batch}" in ckpt_pairs:
                row["a_ckpt"] = in_subprocess({
                    **common, "mode": "cached", "steps": args.steps,
                    "activation_checkpointing": True,
                    "run": str(root / f"ack-{preset}-{batch}-{device}")})
            print(f"{device} {preset} b{batch}: {row}", flush=True)
            return row

        rows = [pair(p, b, "cpu", False) for p in presets for b in batches]
        gpu_rows = ([pair(p, b, "cuda", True) for p in presets for b in GPU_BATCHES]
                    if torch.cuda.is_available() else [])
    text = report(rows, gpu_rows, loaders, args)
    print(text)
    if not args.no_append:
        append_benchmarks(text)


if __name__ == "__main__":
    main()

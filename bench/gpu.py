"""The whole chain on one GPU: codec throughput, cache build, training steps, denoise, demo.

One command, meant to finish within about 8 minutes on an H100, run side by side in one process
tree on one device:

- DAC-16k encoder and decoder throughput (audio seconds per wall second), fp32 and bf16
  autocast, at a few batch sizes (real architecture, RANDOM INIT: speed does not depend on the
  weights);
- a cache build on the GPU (``cleancodec.pipeline.build.build_cache``): encoded audio seconds
  per wall second vs the bare encoder, for 1, 2 and 4 CPU mixing workers (how many it takes to
  keep the GPU busy);
- training steps, medium and large, bf16, batch 64 and 256, on a cache of the DAC-16k shape:
  step time, windows/s, GPU peak memory, share of the step spent waiting for data, with the
  batches streamed from the local cache, read as byte ranges (``cached``) and with the train split
  resident in GPU memory (``resident``); and the cached step vs encoding the batch inside the
  step;
- denoise real-time factor at 16 chunks per forward;
- ``make demo CODEC=random`` wall time (``--demo``; the demo corpus must be buildable).

``--device cpu --smoke`` runs every part at toy sizes on the CPU: a check of the script itself,
not a measurement (nothing is appended).

    .venv/bin/python bench/gpu.py [--demo] [--no-append]
    .venv/bin/python bench/gpu.py --device cpu --smoke
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_benchmarks, git_commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE, HOP, LATENT_DIM, FRAMES = 16000, 320, 1024, 150
WINDOW_SECONDS = FRAMES * HOP / SAMPLE_RATE
CODEC_SEED = 0
MIB = 1024 * 1024
DENOISE_REPS = 2
FULL = {  # sizes of the real run
    "codec_batches": (1, 16, 64), "codec_windows": 128, "build_windows": 256,
    "build_workers": (1, 2, 4), "presets": ("medium", "large"), "train_batches": (64, 256),
    "train_steps": 20, "warmup": 3, "encode_steps": 3, "denoise_seconds": 60.0,
    "denoise_batch": 16, "arch": "dac16k",
}
SMOKE = {  # --smoke: every code path at toy sizes
    "codec_batches": (1, 2), "codec_windows": 2, "build_windows": 4, "build_workers": (1,),
    "presets": ("medium",), "train_batches": (2,), "train_steps": 2, "warmup": 1,
    "encode_steps": 1, "denoise_seconds": 4.0, "denoise_batch": 2, "arch": "tiny",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _codec(device: str, bf16: bool, batch: int, arch: str):
    from cleancodec.core.codec import CodecConfig, load_codec

    return load_codec(CodecConfig(weights="random", random_seed=CODEC_SEED, random_arch=arch,
                                  device=device, bf16=bf16, batch_size=batch))


def _waves(n: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, int(seconds * SAMPLE_RATE)))).astype(np.float32)


# --- codec -----------------------------------------------------------------------------------

def codec_rows(device: str, sizes: dict) -> list[dict]:
    """Encoder and decoder audio-s per wall-s, fp32 and bf16, per batch size."""
    rows = []
    waves = _waves(sizes["codec_windows"], WINDOW_SECONDS)
    audio_s = len(waves) * WINDOW_SECONDS
    for bf16 in (False, True):
        for batch in sizes["codec_batches"]:
            codec = _codec(device, bf16, batch, sizes["arch"])
            codec.encode(waves[:batch])                          # warm-up (cuDNN autotune)
            _sync(codec.device)
            t0 = time.perf_counter()
            latents = [codec.encode(waves[i:i + batch]) for i in range(0, len(waves), batch)]
            _sync(codec.device)
            enc = audio_s / (time.perf_counter() - t0)
            codec.decode(codec.quantize(latents[0]))
            _sync(codec.device)
            t0 = time.perf_counter()
            for z in latents:
                codec.decode(codec.quantize(z))
            _sync(codec.device)
            dec = audio_s / (time.perf_counter() - t0)
            rows.append({"bf16": bf16, "batch": batch, "encode_x": enc, "decode_x": dec})
            del codec
    return rows


# --- cache build -----------------------------------------------------------------------------

def build_rows(device: str, sizes: dict, work: Path) -> list[dict]:
    """A synthetic-corpus cache build on ``device`` with 1..N mixing workers."""
    from cleancodec.core.codec import CodecConfig
    from cleancodec.pipeline.build import build_cache
    from cleancodec.pipeline.cache_config import CacheConfig

    rows = []
    codec_cfg = CodecConfig(weights="random", random_seed=CODEC_SEED, random_arch=sizes["arch"],
                            device=device, bf16=True, batch_size=32)
    bare = codec_rows_single(device, sizes)
    for workers in sizes["build_workers"]:
        cfg = CacheConfig(corpus="synthetic", synthetic_dir=str(work / "corpus"),
                          train_windows=sizes["build_windows"], val_windows=0,
                          windows_per_shard=max(1, sizes["build_windows"] // 8),
                          split_noise=False)
        out = work / f"build-{workers}"
        t0 = time.perf_counter()
        build_cache(cfg, codec_cfg, out_dir=out, workers=workers, progress=False)
        wall = time.perf_counter() - t0
        encoded = 2 * sizes["build_windows"] * WINDOW_SECONDS    # clean + noisy streams
        rows.append({"workers": workers, "audio_x": encoded / wall,
                     "ratio": encoded / wall / bare})
    return rows


def codec_rows_single(device: str, sizes: dict) -> float:
    """Bare bf16 encoder rate at batch 32, the build's own setting (audio-s per wall-s)."""
    codec = _codec(device, True, 32, sizes["arch"])
    waves = _waves(max(32, sizes["build_windows"] // 4), WINDOW_SECONDS)
    codec.encode_batched(waves[:2])
    _sync(codec.device)
    t0 = time.perf_counter()
    codec.encode_batched(waves)
    _sync(codec.device)
    return len(waves) * WINDOW_SECONDS / (time.perf_counter() - t0)


# --- training --------------------------------------------------------------------------------

def train_one(spec: dict) -> dict:
    """In a subprocess: time steps of one (preset, batch, mode); data wait measured apart."""
    from bench.train import bench_config
    from cleancodec.core.topology import Topology, pick_device
    from cleancodec.trainer.loop import Trainer

    topo = Topology(device=pick_device(spec["device"]))
    cfg = bench_config(spec["preset"], spec["batch"], spec["device"], True)
    # cached = streamed from the local cache; resident = the split in GPU memory
    cfg.data.resident = "gpu" if spec["mode"] == "resident" and spec["device"] != "cpu" else (
        "ram" if spec["mode"] == "resident" else "off")
    if spec["smoke"]:
        cfg.denoiser.width, cfg.denoiser.depth = 64, 1
    trainer = Trainer(cfg, spec["cache"], Path(spec["run"]), topo)
    trainer.prepare()
    device = topo.device
    codec = None
    if spec["mode"] == "encode":  # the cache has DAC-16k's shape: encode with DAC-16k
        codec = _codec(spec["device"], True, spec["batch"], "dac16k")
        waves = torch.from_numpy(_waves(spec["batch"], WINDOW_SECONDS))
    for _ in range(spec["warmup"]):
        trainer.train_step(trainer.next_batch())
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    waits, totals = [], []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        if codec is None:
            batch = trainer.next_batch()
        else:
            batch = {"noisy": codec.encode(waves), "clean": codec.encode(waves)}
        t1 = time.perf_counter()
        trainer.train_step(batch)
        _sync(device)
        waits.append(t1 - t0)
        totals.append(time.perf_counter() - t0)
    out = {"step_s": float(np.median(totals)), "wait_share": float(sum(waits) / sum(totals))}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / MIB
    trainer.logger.close()
    return out


def _in_subprocess(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_rows(device: str, sizes: dict, work: Path, smoke: bool) -> list[dict]:
    from bench.train import write_bench_cache

    cache = write_bench_cache(work / "train-cache", "zarr")
    rows = []
    for preset in sizes["presets"]:
        for batch in sizes["train_batches"]:
            for mode in ("cached", "resident", "encode"):
                spec = {"preset": preset, "batch": batch, "mode": mode, "device": device,
                        "cache": str(cache), "run": str(work / f"run-{preset}-{batch}-{mode}"),
                        "warmup": sizes["warmup"], "arch": sizes["arch"], "smoke": smoke,
                        "steps": sizes["train_steps"] if mode != "encode"
                        else sizes["encode_steps"]}
                rows.append({**spec, **_in_subprocess(spec)})
    return rows


# --- denoise and demo ------------------------------------------------------------------------

def denoise_rows(device: str, sizes: dict, work: Path, smoke: bool) -> list[dict]:
    """Wall seconds per audio second of the denoise file path, codec alone and with the medium
    and large denoisers (random init), ``denoise_batch`` chunks per forward
    (``bench/denoise.py``'s measurement). The smoke run times the command line instead."""
    if not smoke:
        from bench.denoise import rtf_rows

        return rtf_rows(work, torch.get_num_threads(), device, sizes["denoise_batch"],
                        {seconds: DENOISE_REPS for seconds in (10.0, 60.0)})
    import soundfile as sf

    wav = work / "denoise-in" / "long.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, _waves(1, sizes["denoise_seconds"])[0], SAMPLE_RATE)
    cmd = [sys.executable, "-m", "cleancodec", "denoise", str(wav.parent), str(work / "den-out"),
           "--bypass", "--device", device, "--batch-size", str(sizes["denoise_batch"]),
           "--quiet", f"codec.random_arch={sizes['arch']}", "codec.weights=random"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return [{"model": "bypass", "error": proc.stderr.strip().splitlines()[-1]}]
    return [{"model": "bypass", "seconds": sizes["denoise_seconds"], "batch":
             sizes["denoise_batch"], "rtf": wall / sizes["denoise_seconds"], "ratio": 1.0}]


def demo_row() -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(["make", "demo", "CODEC=random"], cwd=REPO, capture_output=True,
                          text=True)
    return {"minutes": (time.perf_counter() - t0) / 60, "rc": proc.returncode}


# --- report ----------------------------------------------------------------------------------

def report(device_name: str, codec: list[dict], build: list[dict], train: list[dict],
           den: list[dict], demo: dict | None, arch: str) -> str:
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"## GPU: {device_name} ({when}, commit {git_commit()}, torch {torch.__version__})",
             "", f"DAC {arch} architecture at random init (speed does not depend on the "
                 "weights).", "",
             "| codec | batch | encode (audio s / s) | decode (audio s / s) |",
             "|---|---|---|---|"]
    for r in codec:
        lines.append(f"| {'bf16' if r['bf16'] else 'fp32'} | {r['batch']} | "
                     f"{r['encode_x']:.0f} | {r['decode_x']:.0f} |")
    lines += ["", "| cache build, mixing workers | audio s / s | ÷ bare bf16 encoder |",
              "|---|---|---|"]
    lines += [f"| {r['workers']} | {r['audio_x']:.0f} | {r['ratio']:.2f} |" for r in build]
    lines += ["", "| train (bf16) | batch | mode | step (ms) | windows/s | data wait | "
              "GPU peak (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in train:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['batch']} | {r['mode']} | failed: {r['error']} "
                         "| | | |")
            continue
        peak = f"{r['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in r else "–"
        lines.append(f"| {r['preset']} | {r['batch']} | {r['mode']} | {1e3 * r['step_s']:.1f} | "
                     f"{r['batch'] / r['step_s']:.0f} | {100 * r['wait_share']:.1f} % | {peak} |")
    cached = {(r["preset"], r["batch"]): r for r in train
              if r["mode"] == "cached" and "step_s" in r}
    for r in train:
        if r["mode"] == "encode" and "step_s" in r and (r["preset"], r["batch"]) in cached:
            ratio = r["step_s"] / cached[(r["preset"], r["batch"])]["step_s"]
            lines.append(f"\n{r['preset']} × {r['batch']}: encode-in-step ÷ cached step = "
                         f"{ratio:.1f}")
    lines += ["", "| denoise | file (s) | chunks per forward | RTF | ÷ codec alone |",
              "|---|---|---|---|---|"]
    for r in den:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['model']} | {r['seconds']:.0f} | {r['batch']} | "
                         f"{r['rtf']:.4f} | {r['ratio']:.2f} |")
    if demo:
        lines += ["", f"`make demo CODEC=random`: {demo['minutes']:.1f} min (exit {demo['rc']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: a check of the script")
    parser.add_argument("--demo", action="store_true", help="also time make demo CODEC=random")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_one(json.loads(args.one))))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA device visible to torch (use --device cpu "
                         "--smoke to check the script)")
    sizes = SMOKE if args.smoke else FULL
    name = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
            else "CPU (smoke run, not a measurement)")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        codec = codec_rows(args.device, sizes)
        print(f"codec done ({time.perf_counter() - t0:.0f} s)", flush=True)
        build = build_rows(args.device, sizes, work)
        print(f"build done ({time.perf_counter() - t0:.0f} s)", flush=True)
        train = train_rows(args.device, sizes, work, args.smoke)
        print(f"train done ({time.perf_counter() - t0:.0f} s)", flush=True)
        den = denoise_rows(args.device, sizes, work, args.smoke)
        demo = demo_row() if args.demo else None
    text = report(name, codec, build, train, den, demo, sizes["arch"])
    print(text)
    if not (args.no_append or args.smoke):
        print(f"appended to {append_benchmarks(text)}")


if __name__ == "__main__":
    main()

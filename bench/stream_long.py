"""The long-run costs of streaming (run by ``bench/stream.py``, reported in its table):

1. End to end: ``cleancodec denoise`` and ``cleancodec denoise --stream`` of the same 30 s file
   (16-bit WAV, default block, stateful), one process each, alternating,
   :data:`E2E_REPEATS` times.
2. Memory: a child process streams :data:`MEMORY_SECONDS` of synthetic noise through the
   stateful stream in pushes of :data:`MEMORY_PUSH` samples and samples its resident set
   (RSS) every :data:`MEMORY_EVERY_S` seconds of audio.

``python bench/stream_long.py --memory-child ARCH SECONDS`` is the child (prints JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stream import small_denoiser  # noqa: E402
from cleancodec.core.codec import CodecConfig, load_codec  # noqa: E402
from cleancodec.infer.denoise import Enhancer  # noqa: E402
from cleancodec.infer.stateful import StatefulStream  # noqa: E402
from cleancodec.infer.stream import DEFAULT_BLOCK_MS  # noqa: E402
from cleancodec.trainer.checkpoint import FORMAT_VERSION, save_atomic  # noqa: E402

E2E_SECONDS, E2E_REPEATS = 30.0, 2
MEMORY_SECONDS, MEMORY_PUSH, MEMORY_EVERY_S = 600.0, 3200, 30.0
MEMORY_MIN_SAMPLES = 4  # RSS samples of a short run (more often than every MEMORY_EVERY_S)
MEMORY_ARCH = "tiny"
KIB_PER_MIB = 1024


# --- end to end -------------------------------------------------------------------------------


def e2e_rows(enh: Enhancer, x: np.ndarray, arch: str, seconds: float, tmp: Path,
             repeats: int = E2E_REPEATS) -> dict:
    """Wall seconds of ``cleancodec denoise`` and ``cleancodec denoise --stream`` on one file
    (one thread each, alternating, ``repeats`` times)."""
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
    for _ in range(repeats):
        for name, args in commands.items():
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "cleancodec", *args], cwd=REPO,
                                  capture_output=True, text=True, env=env)
            walls[name].append(time.perf_counter() - start)
            if proc.returncode:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
            if name.endswith("--stream") and "stateful" not in proc.stderr:
                raise SystemExit(f"{name} did not use the stateful stream:\n{proc.stderr}")
    return {"seconds": seconds, "walls": walls, "repeats": repeats}


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
    every = int(min(MEMORY_EVERY_S, seconds / MEMORY_MIN_SAMPLES) * codec.sample_rate)
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


def e2e_lines(e2e: dict) -> list[str]:
    """The report's end-to-end paragraph."""
    walls = {k: float(np.median(v)) for k, v in e2e["walls"].items()}
    return ["", f"End to end, one {e2e['seconds']:.0f} s 16-bit WAV, 1 thread, process start "
            f"to exit (median of {e2e['repeats']}, alternating): `cleancodec denoise` "
            f"{walls['denoise']:.1f} s, `cleancodec denoise --stream` (block "
            f"{DEFAULT_BLOCK_MS:.0f} ms, stateful) {walls['denoise --stream']:.1f} s: ratio "
            f"{walls['denoise --stream'] / walls['denoise']:.2f}."]


def memory_lines(memory: dict) -> list[str]:
    """The report's memory paragraph."""
    rss = np.array([r for _, r in memory["samples"]])
    half = len(rss) // 2
    return ["", f"Memory: {memory['seconds'] / 60:.0f} min of audio through one stateful "
            f"stream ({memory['arch']} codec, block {DEFAULT_BLOCK_MS:.0f} ms, pushes of "
            f"{MEMORY_PUSH} samples, {memory['wall']:.0f} s wall): RSS "
            f"{rss[0]:.1f} MiB after {memory['samples'][0][0]:.0f} s, peak {rss.max():.1f} "
            f"MiB, last {rss[-1]:.1f} MiB; peak of the second half − peak of the first half "
            f"{rss[half:].max() - rss[:max(1, half)].max():+.1f} MiB."]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memory-child", nargs=2, required=True, metavar=("ARCH", "SECONDS"))
    args = parser.parse_args()
    memory_child(args.memory_child[0], float(args.memory_child[1]))

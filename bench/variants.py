"""How many noisy variants per clean window (``cache.noisy_per_clean``, K)?

For K in {1, 2, 4}: a cache with the same encode budget (clean + noisy encodes), the tiny
profile trained for the same number of steps (two seeds), and the held-out gain (latent L1 of
the denoised over L1 of the noisy, lower is better) measured on one common val split (the K = 1
cache's). Also encodes and bytes per training pair. Tiny random-init codec and the synthetic
corpus: a smoke-scale stand-in for the demo cache, labelled as such.

    python bench/variants.py             # ~5 minutes on 2 cores; appends to BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, REPO, git_commit, publish  # noqa: E402

from cleancodec.core.codec import CodecConfig  # noqa: E402
from cleancodec.pipeline.build import CacheConfig, build_cache  # noqa: E402
from cleancodec.pipeline.manifest import load_manifest  # noqa: E402
from cleancodec.pipeline.mix import MixConfig  # noqa: E402
from cleancodec.trainer.checkpoint import load_denoiser  # noqa: E402
from cleancodec.trainer.config import DataConfig, load_train_config  # noqa: E402
from cleancodec.trainer.data import open_split, val_batches  # noqa: E402
from cleancodec.trainer.loop import fit  # noqa: E402

KS = (1, 2, 4)
ENCODES = 192            # clean + noisy encodes of each train split
VAL_WINDOWS = 32
WINDOW_SECONDS = 1.0
STEPS = 300
SEEDS = (0, 1)
TINY = REPO / "conf" / "tiny.yaml"
PAIR_BYTES_K1 = 2        # latents per pair at K = 1 (clean + noisy)


def build(root: Path, k: int) -> Path:
    cfg = CacheConfig(corpus="synthetic", synthetic_dir=str(root / "corpus"),
                      train_windows=ENCODES // (1 + k), val_windows=VAL_WINDOWS,
                      windows_per_shard=16, split_noise=False, noisy_per_clean=k,
                      mix=MixConfig(window_seconds=WINDOW_SECONDS))
    out = root / f"k{k}"
    build_cache(cfg, CodecConfig(weights="random", random_arch="tiny"), out_dir=out,
                progress=False)
    return out


@torch.no_grad()
def held_out_gain(run: Path, val_cache: Path) -> float:
    model, _ = load_denoiser(run / "latest.pt")
    model.eval()
    src = open_split(val_cache, load_manifest(val_cache), "val")
    err = ref = 0.0
    for batch in val_batches(src, DataConfig(val_max_windows=None)):
        noisy, clean = batch["noisy"].float(), batch["clean"].float()
        err += float((model(noisy) - clean).abs().sum())
        ref += float((noisy - clean).abs().sum())
    return err / ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cleancodec-variants-") as tmp:
        root = Path(tmp)
        caches = {k: build(root, k) for k in KS}
        base = load_train_config(TINY)
        for k, cache in caches.items():
            m = load_manifest(cache)
            windows = m["counts"]["windows"]["train"]
            pairs = windows * k
            gains = []
            for seed in SEEDS:
                cfg = dataclasses.replace(base, steps=args.steps, seed=seed, progress=False,
                                          val_every=args.steps, checkpoint_every=args.steps,
                                          milestones=[], data=dataclasses.replace(
                                              base.data, num_workers=0, resident="off"))
                run = root / f"run-k{k}-s{seed}"
                fit(cfg, cache, run)
                gains.append(held_out_gain(run, caches[1]))
            rows.append((k, windows, pairs, (windows + pairs) / pairs,
                         (1 + k) / (PAIR_BYTES_K1 * k), float(np.mean(gains)), gains))
            print(rows[-1], flush=True)
    lines = [
        f"## noisy variants per clean window (`bench/variants.py`), "
        f"{dt.date.today().isoformat()}, commit {git_commit()}",
        "",
        f"Tiny **random-init** codec, synthetic corpus ({WINDOW_SECONDS:g} s windows), "
        f"{ENCODES} encodes per train split for every K, tiny profile trained {args.steps} steps "
        f"(seeds {', '.join(map(str, SEEDS))}); held-out gain on one common val split "
        f"({VAL_WINDOWS} windows of the K = 1 cache; lower is better, 1.0 = unchanged).",
        "",
        "| K | clean windows | pairs | encodes / pair | bytes / pair vs K = 1 | held-out gain "
        "(mean) | per seed |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k, w, p, enc, by, g, gs in rows:
        lines.append(f"| {k} | {w} | {p} | {enc:.2f} | {by:.3f} | {g:.4f} | "
                     f"{', '.join(f'{x:.4f}' for x in gs)} |")
    publish("\n".join(lines) + "\n", BENCHMARKS, not args.no_append)


if __name__ == "__main__":
    main()

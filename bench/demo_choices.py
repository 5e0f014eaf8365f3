"""Two defaults measured on the demo cache: noisy variants per clean window (``cache.
noisy_per_clean``, K) and the denoiser blocks' response normalisation (``train.denoiser.grn``).

The real DAC-16k architecture at RANDOM INIT (pretrained weights cannot be downloaded on the
benchmark machine), the demo corpus (``make demo-data``), the demo profile (``conf/demo.yaml``:
3 s windows, medium denoiser, batch 8, 300 steps), all runs for the same number of steps and
seed(s). Held-out gain = latent L1 of the denoised over L1 of the noisy on one common val split
(the K = 1 cache's, ``VAL_WINDOWS`` windows); lower is better, 1.0 = unchanged.

- **K**: for K in {1, 2, 4}, a train split with the same encode budget (clean + noisy encodes:
  the demo cache's 32 x (1 + 4) = 160), so K trades distinct clean windows for noise draws.
- **grn**: ``global`` (statistics of the whole sequence), ``window`` (``GRN_WINDOW`` frames)
  and ``none`` (no GRN), each trained on the default-K train split (the ``none`` run is that
  K's run above: the default denoiser).

    python bench/demo_choices.py           # ~25 minutes on 2 cores; appends to BENCHMARKS.md
    python bench/demo_choices.py --steps 20 --no-append   # a quick check that it runs
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, REPO, git_commit, publish  # noqa: E402
from variants import PAIR_BYTES_K1, held_out_gain  # noqa: E402

from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig  # noqa: E402
from cleancodec.pipeline.build import build_cache, load_cache_config  # noqa: E402
from cleancodec.pipeline.manifest import load_manifest  # noqa: E402
from cleancodec.trainer.config import load_train_config  # noqa: E402
from cleancodec.trainer.loop import fit  # noqa: E402

DEMO_CONF = REPO / "conf" / "demo.yaml"
DEMO_CORPUS = REPO / "data" / "demo"
KS = (1, 2, 4)
DEMO_CLEAN_WINDOWS = 32   # conf/demo.yaml train_windows at the default K
VAL_WINDOWS = 16          # the common val split (K = 1 cache)
OTHER_VAL_WINDOWS = 4     # the other caches' own val splits (the trainer needs one)
GRN_KINDS = ("global", "window", "none")
GRN_WINDOW = 9
SEEDS = (0,)


def build(root: Path, k: int, budget: int, corpus: Path) -> Path:
    """A demo cache with ``budget // (1 + k)`` clean windows and ``k`` noisy variants each."""
    cfg = load_cache_config(DEMO_CONF)
    cfg = dataclasses.replace(cfg, train_windows=budget // (1 + k), noisy_per_clean=k,
                              val_windows=VAL_WINDOWS if k == 1 else OTHER_VAL_WINDOWS)
    out = root / f"k{k}"
    build_cache(cfg, CodecConfig(weights="random", random_arch="dac16k", device="cpu"),
                clean_dir=corpus / "clean", noise_dir=corpus / "noise", out_dir=out,
                progress=False)
    return out


def train(cache: Path, run: Path, steps: int, seed: int, grn: str) -> float:
    """Train the demo profile on ``cache``; returns the wall seconds."""
    base = load_train_config(DEMO_CONF)
    denoiser = dataclasses.replace(base.denoiser, grn=grn,
                                   grn_window=GRN_WINDOW if grn == "window" else 0)
    cfg = dataclasses.replace(base, steps=steps, seed=seed, progress=False, val_every=steps,
                              checkpoint_every=steps, milestones=[], denoiser=denoiser)
    start = time.perf_counter()
    fit(cfg, cache, run)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--corpus", type=Path, default=DEMO_CORPUS)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if not (args.corpus / "clean").is_dir():
        sys.exit(f"{args.corpus}: no demo corpus here; build it with `make demo-data`")
    steps = args.steps or load_train_config(DEMO_CONF).steps
    default_k = load_cache_config(None).noisy_per_clean
    budget = DEMO_CLEAN_WINDOWS * (1 + default_k)
    started = time.perf_counter()
    k_rows, grn_rows = [], []
    with tempfile.TemporaryDirectory(prefix="cleancodec-demo-choices-") as tmp:
        root = Path(tmp)
        caches = {k: build(root, k, budget, args.corpus) for k in KS}
        common_val = caches[1]
        gains: dict[tuple[int, str], list[float]] = {}
        for k, cache in caches.items():
            kinds = GRN_KINDS if k == default_k else ("none",)
            for grn in kinds:
                for seed in args.seeds:
                    run = root / f"run-k{k}-{grn}-s{seed}"
                    seconds = train(cache, run, steps, seed, grn)
                    gains.setdefault((k, grn), []).append(held_out_gain(run, common_val))
                    print(f"K={k} grn={grn} seed={seed}: gain {gains[k, grn][-1]:.4f} "
                          f"({seconds:.0f} s)", flush=True)
            windows = load_manifest(cache)["counts"]["windows"]["train"]
            pairs = windows * k
            g = gains[k, "none"]
            k_rows.append((k, windows, pairs, (windows + pairs) / pairs,
                           (1 + k) / (PAIR_BYTES_K1 * k), float(np.mean(g)), g))
        grn_rows = [(grn, float(np.mean(gains[default_k, grn])), gains[default_k, grn])
                    for grn in GRN_KINDS]
    ref = dict((grn, g) for grn, g, _ in grn_rows)["global"]
    lines = [
        f"## defaults measured on the demo cache (`bench/demo_choices.py`), "
        f"{dt.date.today().isoformat()}, commit {git_commit()}",
        "",
        f"**{RANDOM_INIT_BANNER}** Demo corpus, DAC-16k architecture at random init, demo "
        f"profile (medium denoiser, batch 8), {steps} steps, seed(s) "
        f"{', '.join(map(str, args.seeds))}; held-out gain on one common val split "
        f"({VAL_WINDOWS} windows of the K = 1 cache; lower is better, 1.0 = unchanged). "
        f"Whole run {(time.perf_counter() - started) / 60:.0f} min on 2 CPU cores.",
        "",
        f"Noisy variants per clean window, {budget} encodes per train split for every K:",
        "",
        "| K | clean windows | pairs | encodes / pair | bytes / pair vs K = 1 | held-out gain "
        "(mean) | per seed |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k, w, p, enc, by, g, gs in k_rows:
        lines.append(f"| {k} | {w} | {p} | {enc:.2f} | {by:.3f} | {g:.4f} | "
                     f"{', '.join(f'{x:.4f}' for x in gs)} |")
    lines += ["", f"Response normalisation, on the K = {default_k} train split:", "",
              "| grn | held-out gain (mean) | vs global | per seed |", "|---|---:|---:|---|"]
    for grn, g, gs in grn_rows:
        label = f"window ({GRN_WINDOW} frames)" if grn == "window" else grn
        lines.append(f"| {label} | {g:.4f} | {100 * (g / ref - 1):+.1f} % | "
                     f"{', '.join(f'{x:.4f}' for x in gs)} |")
    publish("\n".join(lines) + "\n", BENCHMARKS, not args.no_append)


if __name__ == "__main__":
    main()

"""cleancodec's training recipe (``medium`` preset) against the seed research code's
(``seed-medium`` preset), as wholes, on the demo cache.

The real DAC-16k architecture at RANDOM INIT (pretrained weights cannot be downloaded on the
benchmark machine), the demo corpus (``make demo-data``), one demo cache (``conf/demo.yaml``:
32 clean train windows x K = 4 noisy variants, 3 s windows; ``VAL_WINDOWS`` clean val windows).

Held equal between the recipes (:data:`HELD_EQUAL`): the demo profile's batch size (8),
loader settings (workers, statistics windows, val cap), the step count and the seeds; bf16 is
off in both (the demo profile's and the seed's value; it only acts on CUDA). Everything else
the preset sets is the recipe's own: for ``seed-medium`` its G and D, feature matching summed
with weight 1, no warm-up (the demo profile's 50-step warm-up is cleancodec's, shortened for a
short run), no EMA; for ``medium`` cleancodec's G and D, feature matching mean x 2, the demo's
50-step warm-up, EMA 0.999. Both use the trainer's one-forward D step.

(a) equal steps: both recipes for ``--steps`` steps (default :data:`STEPS`, a third of the
demo's 300, to keep the run near half an hour). Seconds per step: both recipes' trainers built
side by side and timed in alternating rounds of ``TIMING_STEPS`` steps (data reading included),
so that load from other jobs on the machine falls on both alike; the median round of each.
(b) equal wall time: those seconds per step give the faster recipe ``steps x slower / faster``
steps; those runs continue its (a) runs (neither recipe decays the learning rate, so this
equals a run of that length from step 0).
Held-out gain = latent L1 of the denoised over L1 of the noisy on the cache's val split, with
the weights denoise uses (the EMA for ``medium``); lower is better, 1.0 = unchanged.

    python bench/seed_recipe.py   # 21 min of training on 2 cores at load ~4 + the cache build
                                  # (~3 min idle, ~22 min at load ~10); appends to BENCHMARKS.md
    python bench/seed_recipe.py --steps 20 --seeds 0 --no-append   # a quick check that it runs
    python bench/seed_recipe.py --cache data/bench-seed-cache   # keep the cache for reruns
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, REPO, git_commit, publish  # noqa: E402
from variants import held_out_gain  # noqa: E402

from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig  # noqa: E402
from cleancodec.core.topology import process_group  # noqa: E402
from cleancodec.pipeline.build import build_cache, load_cache_config  # noqa: E402
from cleancodec.pipeline.manifest import load_manifest  # noqa: E402
from cleancodec.trainer.config import TrainConfig, load_train_config, resolve_preset  # noqa: E402
from cleancodec.trainer.data import TRAIN, latent_stats, open_split  # noqa: E402
from cleancodec.trainer.loop import Trainer, fit  # noqa: E402
from cleancodec.trainer.rundir import CONFIG_FILE, METRICS_FILE  # noqa: E402

DEMO_CONF = REPO / "conf" / "demo.yaml"
DEMO_CORPUS = REPO / "data" / "demo"
RECIPES = ("medium", "seed-medium")   # cleancodec's default, the seed's
VAL_WINDOWS = 16  # clean val windows (x K noisy variants): twice the demo's, a steadier gain
SEEDS = (0, 1)
# Steps of the equal-step runs: a third of the demo's 300, so that the whole run (4 equal-step
# runs and 2 longer ones) stays near half an hour on 2 CPU cores (medium: ~2 s / step idle)
STEPS = 100
# Train keys the demo profile sets that stay the demo's in both recipes, whatever the preset says
# (the shape of resolve_preset's ``written``); steps and milestones are set per run below.
HELD_EQUAL: dict[str, Any] = {
    "data": {"batch_size": True, "num_workers": True, "stats_windows": True,
             "val_max_windows": True},
    "steps": True, "milestones": True, "bf16": True,
}
STEPS_PER_S = "perf/steps_per_s"
TIMING_WARMUP = 2     # untimed steps of each recipe before the timing rounds
TIMING_ROUNDS = 4     # alternating rounds (ABBA order)
TIMING_STEPS = 5      # steps per recipe per round


def build(out: Path, corpus: Path) -> Path:
    """The demo cache (random-init DAC-16k) with ``VAL_WINDOWS`` clean val windows, built in
    ``out`` (a cache already there from the same inputs and config is reused, an unfinished one
    resumed)."""
    cfg = dataclasses.replace(load_cache_config(DEMO_CONF), val_windows=VAL_WINDOWS)
    build_cache(cfg, CodecConfig(weights="random", random_arch="dac16k", device="cpu"),
                clean_dir=corpus / "clean", noise_dir=corpus / "noise", out_dir=out,
                progress=False)
    return out


def recipe_config(preset: str, steps: int, seed: int) -> TrainConfig:
    """The demo profile under ``preset``, where the preset wins over every key the demo wrote
    except :data:`HELD_EQUAL`; ``steps`` steps, seed ``seed``, one validation at the end."""
    cfg = resolve_preset(load_train_config(DEMO_CONF, preset), preset, HELD_EQUAL)
    return dataclasses.replace(cfg, steps=steps, seed=seed, progress=False, val_every=steps,
                               checkpoint_every=steps, milestones=[])


def seconds_per_step(run: Path, from_step: int = 0) -> float:
    """Mean training-loop seconds per step of the logging intervals after ``from_step`` in the
    run's metrics log, the first such interval left out when there are others (it holds the
    loader's start)."""
    rates = []
    for line in (run / METRICS_FILE).read_text().splitlines():
        row = json.loads(line)
        if STEPS_PER_S in row and row["step"] > from_step:
            rates.append(float(row[STEPS_PER_S]))
    if not rates:
        raise RuntimeError(f"{run / METRICS_FILE}: no {STEPS_PER_S} logged after step {from_step}")
    kept = rates[1:] or rates
    return float(np.mean([1.0 / r for r in kept]))


def time_steps(cache: Path, root: Path) -> dict[str, tuple[float, float]]:
    """Wall and process-CPU seconds per training step of each recipe (the median of
    ``TIMING_ROUNDS`` alternating rounds of ``TIMING_STEPS`` steps; next batch included)."""
    wall: dict[str, list[float]] = {p: [] for p in RECIPES}
    cpu: dict[str, list[float]] = {p: [] for p in RECIPES}
    with process_group("cpu") as env:
        trainers = {}
        for preset in RECIPES:
            trainer = Trainer(recipe_config(preset, TIMING_WARMUP + TIMING_ROUNDS * TIMING_STEPS,
                                            0), cache, root / f"timing-{preset}", env)
            trainer.prepare()
            for _ in range(TIMING_WARMUP):
                trainer.train_step(trainer.next_batch())
            trainers[preset] = trainer
        for r in range(TIMING_ROUNDS):
            for preset in RECIPES if r % 2 == 0 else RECIPES[::-1]:
                trainer = trainers[preset]
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(TIMING_STEPS):
                    trainer.train_step(trainer.next_batch())
                wall[preset].append((time.perf_counter() - w0) / TIMING_STEPS)
                cpu[preset].append((time.process_time() - c0) / TIMING_STEPS)
        for trainer in trainers.values():
            trainer._batches = None   # stops the loader workers
            trainer.logger.close()
    return {p: (float(np.median(wall[p])), float(np.median(cpu[p]))) for p in RECIPES}


def train(cache: Path, run: Path, preset: str, steps: int, seed: int) -> float:
    """Train ``preset`` on ``cache`` up to ``steps`` (resuming ``run`` when it holds a run);
    returns the wall seconds of the call."""
    start = time.perf_counter()
    fit(recipe_config(preset, steps, seed), cache, run)
    return time.perf_counter() - start


def describe(run: Path) -> str:
    """``G x.xx M, D y.yy M`` parameters of a run (its ``config.json``)."""
    info = json.loads((run / CONFIG_FILE).read_text())
    return (f"G {info['denoiser_parameters'] / 1e6:.2f} M, "
            f"D {info['discriminator_parameters'] / 1e6:.2f} M")


def cache_latent_scale(cache: Path) -> float:
    """Mean over channels of the per-channel std of the cache's train latents."""
    _, std = latent_stats(open_split(cache, load_manifest(cache), TRAIN), 128, 0)
    return float(std.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--corpus", type=Path, default=DEMO_CORPUS)
    parser.add_argument("--cache", type=Path, default=None,
                        help="build the cache here, or reuse the one there (default: a "
                             "temporary folder, removed at the end)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if not (args.corpus / "clean").is_dir():
        sys.exit(f"{args.corpus}: no demo corpus here; build it with `make demo-data`")
    steps = args.steps
    started = time.perf_counter()
    load_start = os.getloadavg()[1]
    gains: dict[tuple[str, str], list[float]] = {}
    in_run: dict[str, list[float]] = {p: [] for p in RECIPES}
    params: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cleancodec-seed-recipe-") as tmp:
        root = Path(tmp)
        cache = build(args.cache or root / "cache", args.corpus)
        scale = cache_latent_scale(cache)
        build_minutes = (time.perf_counter() - started) / 60
        # (a) equal steps; recipes alternate within a seed, so load from other work on the
        # machine falls on both alike
        for seed in args.seeds:
            for preset in RECIPES:
                run = root / f"{preset}-s{seed}"
                seconds = train(cache, run, preset, steps, seed)
                gains.setdefault((preset, "steps"), []).append(held_out_gain(run, cache))
                in_run[preset].append(seconds_per_step(run))
                params[preset] = describe(run)
                print(f"{preset} seed {seed}, {steps} steps: gain {gains[preset, 'steps'][-1]:.4f}"
                      f", {in_run[preset][-1]:.3f} s/step in the run ({seconds:.0f} s)", flush=True)
        timing = time_steps(cache, root)
        print("interleaved timing (wall, CPU s/step):", timing, flush=True)
        slow = max(RECIPES, key=lambda p: timing[p][0])
        fast = min(RECIPES, key=lambda p: timing[p][0])
        fast_steps = max(steps, round(steps * timing[slow][0] / timing[fast][0]))
        # (b) equal wall time: the slower recipe's (a) runs; the faster one's continue
        gains[slow, "time"] = gains[slow, "steps"]
        for seed in args.seeds:
            run = root / f"{fast}-s{seed}"
            seconds = train(cache, run, fast, fast_steps, seed)
            gains.setdefault((fast, "time"), []).append(held_out_gain(run, cache))
            print(f"{fast} seed {seed}, {fast_steps} steps: gain {gains[fast, 'time'][-1]:.4f} "
                  f"(+{seconds:.0f} s)", flush=True)
    ran_steps = {(p, "steps"): steps for p in RECIPES}
    ran_steps.update({(slow, "time"): steps, (fast, "time"): fast_steps})
    ref = {b: float(np.mean(gains["medium", b])) for b in ("steps", "time")}
    lines = [
        f"## cleancodec's recipe vs the seed's (`bench/seed_recipe.py`), "
        f"{dt.date.today().isoformat()}, commit {git_commit()}",
        "",
        f"**{RANDOM_INIT_BANNER}** Demo corpus, one demo cache (DAC-16k architecture at random "
        f"init; 32 clean train windows x K = 4, {VAL_WINDOWS} x 4 val pairs; train latents' "
        f"per-channel std {scale:.3g} on average), presets `medium` (cleancodec) and "
        f"`seed-medium` (the seed's models and recipe) trained with the demo profile's batch "
        f"size (8) and loader settings, {steps} steps where equal (the demo trains 300: fewer "
        f"for time), bf16 off, seeds {', '.join(map(str, args.seeds))}. "
        f"Warm-up: `medium` the demo's 50 steps, `seed-medium` none (its recipe); EMA: `medium` "
        f"0.999 (scored with the EMA weights), `seed-medium` none. Held-out gain on the val split "
        f"(lower is better, 1.0 = unchanged). The recipes are measured as wholes. 2 CPU cores "
        f"shared with other jobs (load average over 5 min {load_start:.1f} at the start, "
        f"{os.getloadavg()[1]:.1f} at the end). Whole run "
        f"{(time.perf_counter() - started) / 60:.0f} min (cache build {build_minutes:.0f} min).",
        "",
        f"Parameters: `medium` {params['medium']}; `seed-medium` {params['seed-medium']}.",
        "",
        "| budget | recipe | steps | s / step (interleaved) | CPU s / step | s / step in the "
        "runs | held-out gain (mean) | vs medium | per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for budget, label in (("steps", "equal steps"), ("time", "equal wall time")):
        for preset in RECIPES:
            g = gains[preset, budget]
            mean = float(np.mean(g))
            lines.append(
                f"| {label} | `{preset}` | {ran_steps[preset, budget]} | {timing[preset][0]:.3f} | "
                f"{timing[preset][1]:.3f} | {np.mean(in_run[preset]):.3f} | {mean:.4f} | "
                f"{100 * (mean / ref[budget] - 1):+.1f} % | {', '.join(f'{x:.4f}' for x in g)} |")
    lines += ["", f"Equal wall time: `{fast}` ran {timing[slow][0] / timing[fast][0]:.2f}x the "
              f"steps of `{slow}` ({fast_steps} vs {steps}), from the interleaved seconds per "
              f"step (median of {TIMING_ROUNDS} alternating rounds of {TIMING_STEPS} steps each, "
              "next batch included); its extra steps continue its equal-step runs. The seconds "
              "per step in the runs (mean over seeds and logging intervals, the first left out) "
              "were measured at different times and follow the machine's load."]
    publish("\n".join(lines) + "\n", BENCHMARKS, not args.no_append)


if __name__ == "__main__":
    main()

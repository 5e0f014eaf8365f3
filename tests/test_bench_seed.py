"""bench/seed_recipe.py: the two recipes' configs hold exactly the demo keys it says, its
seconds-per-step reading, and its report (training and timing replaced by stand-ins: the real
run takes half an hour)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import seed_recipe  # noqa: E402

from cleancodec.trainer.config import load_train_config  # noqa: E402


def test_recipes_hold_the_demo_batch_and_steps_and_keep_their_own_recipe():
    demo = load_train_config(seed_recipe.DEMO_CONF)
    ours = seed_recipe.recipe_config("medium", 40, 1)
    seed = seed_recipe.recipe_config("seed-medium", 40, 1)
    for cfg in (ours, seed):
        assert (cfg.steps, cfg.seed, cfg.milestones) == (40, 1, [])
        assert cfg.data.batch_size == demo.data.batch_size == 8
        assert cfg.data.num_workers == demo.data.num_workers
        assert cfg.data.stats_windows == demo.data.stats_windows
        assert cfg.bf16 is False
    # cleancodec: the demo's short warm-up, EMA, its own models
    assert ours.optim.warmup_steps == demo.optim.warmup_steps == 50
    assert ours.ema_decay == 0.999 and ours.denoiser.arch == "cleancodec"
    assert (ours.loss.feature_matching, ours.loss.feature_matching_reduce) == (2.0, "mean")
    # the seed: its recipe wins over the demo's warm-up; batch 256 / 40k steps do not
    assert seed.optim.warmup_steps == 0
    assert seed.ema_decay is None
    assert (seed.denoiser.arch, seed.discriminator.arch) == ("seed", "seed")
    assert (seed.denoiser.width, seed.denoiser.depth) == (512, 4)
    assert seed.discriminator.channels == 512 and seed.discriminator.kernel_size == 5
    assert (seed.loss.feature_matching, seed.loss.feature_matching_reduce) == (1.0, "sum")


def _metrics(run: Path, rates: dict[int, float]) -> None:
    run.mkdir()
    lines = [json.dumps({"step": step, "perf/steps_per_s": r, "g/loss": 1.0})
             for step, r in rates.items()]
    lines.insert(1, json.dumps({"step": 50, "val/gain": 0.9}))  # a val row has no rate
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_seconds_per_step_leaves_out_the_first_interval_and_earlier_steps(tmp_path):
    run = tmp_path / "run"
    _metrics(run, {25: 0.1, 50: 0.5, 75: 0.25, 100: 2.0, 125: 1.0})
    assert seed_recipe.seconds_per_step(run) == pytest.approx((2 + 4 + 0.5 + 1) / 4)
    assert seed_recipe.seconds_per_step(run, from_step=75) == pytest.approx(1.0)  # 125 only
    assert seed_recipe.seconds_per_step(run, from_step=100) == pytest.approx(1.0)  # the one left
    with pytest.raises(RuntimeError, match="no perf/steps_per_s"):
        seed_recipe.seconds_per_step(run, from_step=125)


def test_report_gives_the_faster_recipe_the_slower_ones_time(monkeypatch, tmp_path, capsys):
    (tmp_path / "clean").mkdir()
    ran: dict[Path, tuple[str, int]] = {}
    per_step = {"medium": 1.0, "seed-medium": 1.5}

    def train(cache, run, preset, steps, seed):
        ran[run] = (preset, steps)
        return 0.0

    monkeypatch.setattr(seed_recipe, "build", lambda out, corpus: out)
    monkeypatch.setattr(seed_recipe, "cache_latent_scale", lambda cache: 0.5)
    monkeypatch.setattr(seed_recipe, "train", train)
    monkeypatch.setattr(seed_recipe, "describe", lambda run: "G 1 M, D 1 M")
    monkeypatch.setattr(seed_recipe, "held_out_gain",
                        lambda run, cache: 0.8 if ran[run][0] == "medium" else 0.9)
    monkeypatch.setattr(seed_recipe, "seconds_per_step", lambda run, from_step=0: 9.0)
    monkeypatch.setattr(seed_recipe, "time_steps",
                        lambda cache, root: {p: (s, 2 * s) for p, s in per_step.items()})
    monkeypatch.setattr(sys, "argv", ["seed_recipe.py", "--steps", "10", "--no-append",
                                      "--corpus", str(tmp_path)])
    before = (REPO / "BENCHMARKS.md").read_text()
    seed_recipe.main()
    out = capsys.readouterr().out
    assert sorted(s for preset, s in ran.values() if preset == "seed-medium") == [10, 10]
    assert sorted(s for preset, s in ran.values() if preset == "medium") == [15, 15]
    assert ("| equal steps | `seed-medium` | 10 | 1.500 | 3.000 | 9.000 | 0.9000 | +12.5 % | "
            "0.9000, 0.9000 |") in out
    assert "| equal wall time | `medium` | 15 | 1.000 | 2.000 | 9.000 | 0.8000 | +0.0 % |" in out
    assert "RANDOM-INIT" in out
    assert (REPO / "BENCHMARKS.md").read_text() == before   # --no-append

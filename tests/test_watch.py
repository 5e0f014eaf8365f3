"""infer.watch: a separate process scores a run's checkpoints with audio metrics."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from cleancodec.cli import main
from cleancodec.infer.watch import pending, watch_run
from cleancodec.trainer.config import load_train_config
from cleancodec.trainer.loop import fit
from tests.helpers import TINY_PROFILE as TINY
from tests.helpers import write_testset

FAST_METRICS = ["evaluate.metrics=[pesq,stoi,si_sdr]", "evaluate.workers=1",
                "evaluate.spectrograms=1"]


def _tiny_run(cache, run):
    cfg = load_train_config(TINY)
    cfg = dataclasses.replace(cfg, steps=20, val_every=10, checkpoint_every=10, milestones=[10],
                              num_threads=1, progress=False,
                              data=dataclasses.replace(cfg.data, num_workers=0))
    return fit(cfg, cache, run)


def test_watch_scores_each_checkpoint_once_into_jsonl_tensorboard_and_a_plot(tiny_latent_cache,
                                                                             tmp_path):
    run, testset = tmp_path / "run", tmp_path / "testset"
    _tiny_run(tiny_latent_cache("zarr"), run)
    write_testset(testset)
    best_step = json.loads((run / "best.json").read_text())["step"]
    assert [(p.name, s) for p, s in pending(run, set())] == sorted(
        [("best.pt", best_step), ("step_10.pt", 10)], key=lambda t: (t[1], t[0]))

    result = watch_run(run, testset, TINY, FAST_METRICS, follow=True, poll_seconds=0.1,
                       timeout_seconds=60)  # the run has ended: follow mode returns by itself
    assert sorted(e["checkpoint"] for e in result.scored) == ["best.pt", "step_10.pt"]
    for entry in result.scored:
        assert {"pesq", "stoi", "si_sdr"} <= set(entry["scores"]) and entry["n_files"] == 2
        assert entry["ema"] is True
    lines = (run / "eval" / "eval.jsonl").read_text().splitlines()
    assert len(lines) == 2 and result.plot and result.plot.stat().st_size > 1000
    events = list((run / "tensorboard" / "eval").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard events written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"audio": 0, "images": 0})
    acc.Reload()
    assert "eval/pesq" in acc.Tags()["scalars"] and acc.Tags()["audio"] and acc.Tags()["images"]

    again = watch_run(run, testset, TINY, FAST_METRICS, follow=False)
    assert again.scored == [] and len((run / "eval" / "eval.jsonl").read_text().splitlines()) == 2


def test_watch_command_scores_a_finished_run_and_refuses_a_bad_testset(tiny_latent_cache, tmp_path):
    run, testset = tmp_path / "run", tmp_path / "testset"
    _tiny_run(tiny_latent_cache("zarr"), run)
    write_testset(testset)
    result = CliRunner().invoke(main, ["watch", str(run), "--testset", str(testset), "--conf",
                                       TINY, "--once", *FAST_METRICS])
    assert result.exit_code == 0, result.output
    assert "step_10.pt step 10" in result.output and "scores.png" in result.output
    bad = CliRunner().invoke(main, ["watch", str(run), "--testset", str(tmp_path), "--once"])
    assert bad.exit_code != 0 and "clean/ and noisy/" in bad.output


@pytest.mark.slow
def test_train_with_watch_scores_the_run_beside_the_trainer(tiny_latent_cache, tmp_path):
    run, testset = tmp_path / "run", tmp_path / "testset"
    write_testset(testset)
    watch_conf = tmp_path / "watch.yaml"
    watch_conf.write_text("evaluate: {metrics: [pesq, stoi], workers: 1, spectrograms: 0}\n")
    result = CliRunner().invoke(main, [
        "train", "--conf", TINY, "--cache", str(tiny_latent_cache("zarr")), "--run",
        str(run), "--quiet", "--watch", str(testset), "--watch-conf", str(watch_conf),
        "train.steps=20", "train.val_every=10", "train.milestones=[10]",
        "train.data.num_workers=0"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in (run / "eval" / "eval.jsonl").read_text().splitlines()]
    assert {(e["checkpoint"], e["step"]) for e in scored} >= {("step_10.pt", 10)}
    assert (run / "eval" / "scores.png").is_file()

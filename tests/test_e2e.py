"""End to end with the tiny codec: cache → train → denoise → evaluate, in-process.

The cache comes from the session fixture ``tiny_latent_cache`` (``pipeline.build.build_cache``
on the seeded synthetic corpus with the tiny random-init DAC); training is ``trainer.loop.fit``
with the shipped tiny profile; denoise and evaluate run through the ``cleancodec`` command.
"""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cleancodec.cli import main
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, identities_match, load_codec
from cleancodec.infer.denoise import snr_db
from cleancodec.trainer.checkpoint import load_denoiser
from cleancodec.trainer.config import load_train_config
from cleancodec.trainer.loop import fit
from tests.helpers import CLIPS, write_testset
from tests.helpers import TINY_PROFILE as TINY


@pytest.mark.slow
def test_cache_train_denoise_evaluate(tmp_path, tiny_latent_cache):
    cache = tiny_latent_cache("zarr")
    cfg = load_train_config(TINY)
    cfg = dataclasses.replace(cfg, steps=60, val_every=30, checkpoint_every=30, milestones=[],
                              num_threads=1, progress=False,
                              data=dataclasses.replace(cfg.data, num_workers=0))
    result = fit(cfg, cache, tmp_path / "run")
    assert result["step"] == 60
    best = tmp_path / "run" / "best.pt"
    _, info = load_denoiser(best)
    codec = load_codec(CodecConfig(weights="random", random_arch="tiny"))
    assert identities_match(info["codec_identity"], codec.identity)

    write_testset(tmp_path / "testset")
    runner = CliRunner()
    outputs = {}
    for name, extra in (("denoised", ["--checkpoint", str(best)]), ("bypass", ["--bypass"])):
        res = runner.invoke(main, ["denoise", str(tmp_path / "testset" / "noisy"),
                                   str(tmp_path / name), "--conf", TINY, "--quiet", *extra])
        assert res.exit_code == 0, res.output
        assert res.output.splitlines()[0] == RANDOM_INIT_BANNER
        assert f"denoised {CLIPS} file(s), skipped 0, failed 0" in res.output
        outputs[name] = sorted((tmp_path / name).glob("*.wav"))
    for den, byp, src in zip(outputs["denoised"], outputs["bypass"],
                             sorted((tmp_path / "testset" / "noisy").glob("*.wav"))):
        assert den.name == byp.name == src.name
        y, _ = sf.read(den, dtype="float32")
        assert len(y) == sf.info(str(src)).frames and np.all(np.isfinite(y))
        # the trained denoiser changes the latents: its output is not the codec's alone
        assert snr_db(sf.read(byp, dtype="float32")[0], y) < 60.0

    res = runner.invoke(main, ["evaluate", "--clean", str(tmp_path / "testset" / "clean"),
                               "--noisy", str(tmp_path / "testset" / "noisy"),
                               "--enhanced", str(tmp_path / "denoised"),
                               "--out", str(tmp_path / "eval"), "--conf", TINY, "--quiet"])
    assert res.exit_code == 0, res.output
    assert RANDOM_INIT_BANNER in res.output.splitlines()[0]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["warning"] == RANDOM_INIT_BANNER
    for cond in ("noisy", "enhanced"):
        for metric in ("pesq", "stoi", "si_sdr", "spk_sim", "dnsmos_ovrl"):
            entry = summary["conditions"][cond][metric]
            assert entry["n"] == CLIPS and np.isfinite(entry["mean"]), (cond, metric)
    with open(tmp_path / "eval" / "per_file.csv") as fh:
        assert fh.readline().strip() == f"# {RANDOM_INIT_BANNER}"
        assert len(list(csv.DictReader(fh))) == CLIPS
    assert len(list((tmp_path / "eval" / "spectrograms").glob("*.png"))) == 2

"""The seed's models and checkpoints: a functional reference written from the seed's published
description, random weights saved in the seed's checkpoint layout, imported, compared."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cleancodec.trainer import checkpoint as ckpt_io
from cleancodec.trainer.models import build_denoiser, build_discriminator, count_parameters
from cleancodec.trainer.seed import SeedDenoiser, SeedDiscriminator
from cleancodec.trainer.seed_import import SeedCheckpointError, import_seed, seed_checkpoint

D, W, DEPTH = 64, 32, 2          # small shapes (the real seed: D 1024, W 512 / 768)
SLOPE = 0.2


# --- the reference, from the description (not from cleancodec's classes) -------------------


def ref_generator(sd: dict[str, torch.Tensor], x: torch.Tensor, depth: int) -> torch.Tensor:
    """x [B, D, T] → x + final(blocks(stem(x))) with the seed's block."""
    y = F.conv1d(x, sd["stem.weight"], sd["stem.bias"])
    for i in range(depth):
        p = f"blocks.{i}."
        width = y.shape[1]
        h = F.conv1d(y, sd[p + "dwconv.weight"], sd[p + "dwconv.bias"], padding=3, groups=width)
        h = h.transpose(1, 2)
        h = F.layer_norm(h, (width,), sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "pwconv1.weight"], sd[p + "pwconv1.bias"]))
        gx = h.pow(2).sum(dim=1, keepdim=True).sqrt()            # L2 over time, [B, 1, 4W]
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        h = sd[p + "grn.gamma"] * (h * nx) + sd[p + "grn.beta"] + h
        h = F.linear(h, sd[p + "pwconv2.weight"], sd[p + "pwconv2.bias"]).transpose(1, 2)
        if p + "gamma" in sd:
            h = sd[p + "gamma"].view(1, -1, 1) * h
        y = y + h
    return x + F.conv1d(y, sd["final.weight"], sd["final.bias"])


def _sn_weight(sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Spectral-normalised weight as torch's hook computes it in eval mode: W / (u . W v)."""
    w = sd[name + ".weight_orig"]
    sigma = torch.dot(sd[name + ".weight_u"], w.flatten(1) @ sd[name + ".weight_v"])
    return w / sigma


def ref_discriminator(sd: dict[str, torch.Tensor], z: torch.Tensor, blocks: int):
    """Score and features of the seed discriminator (eval mode)."""
    h = F.leaky_relu(F.conv1d(z, _sn_weight(sd, "per_frame.0")), SLOPE)
    h = F.leaky_relu(F.conv1d(h, _sn_weight(sd, "per_frame.2")), SLOPE)
    feats = [h]
    for i in range(blocks):
        d = 2 ** i
        p = f"temporal.{i}."
        groups = h.shape[1] // sd[p + "0.weight_orig"].shape[1]
        t = F.conv1d(h, _sn_weight(sd, p + "0"), sd[p + "0.bias"], padding=2 * d, dilation=d,
                     groups=groups)
        t = F.conv1d(F.leaky_relu(t, SLOPE), _sn_weight(sd, p + "2"))
        h = h + t
        feats.append(h)
    act = F.leaky_relu(h, SLOPE)
    feats[-1] = act   # the seed's head activates in place: its last feature is activated
    score = F.conv1d(act, _sn_weight(sd, "head.1"), sd["head.1.bias"]).mean(-1).squeeze(1)
    return score, feats


# --- seed-format files ----------------------------------------------------------------------


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def write_seed_file(path, latent_dim=D, width=W, depth=DEPTH, layer_scale=False, with_d=True,
                    iteration=1234, prefix=""):
    """A checkpoint in the seed's layout, with random weights and one AdamW step taken."""
    torch.manual_seed(0)
    g = SeedDenoiser(latent_dim, width, depth, layer_scale=layer_scale)
    _randomise(g, 1)
    obj = {"denoiser_state_dict": {prefix + k: v for k, v in g.state_dict().items()},
           "iteration": iteration}
    opt_g = torch.optim.AdamW(g.parameters(), lr=4e-4, betas=(0.0, 0.9))
    g(torch.randn(2, latent_dim, 8)).square().mean().backward()
    opt_g.step()
    obj["denoiser_state_dict"] = {prefix + k: v for k, v in g.state_dict().items()}
    obj["optimizer_g_state_dict"] = opt_g.state_dict()
    if with_d:
        d = SeedDiscriminator(latent_dim, channels=32, groups=4)
        _randomise(d, 2)
        d(torch.randn(2, latent_dim, 40))   # one power iteration: u, v no longer at init
        opt_d = torch.optim.AdamW(d.parameters(), lr=1e-4, betas=(0.0, 0.9))
        d(torch.randn(2, latent_dim, 40))[0].mean().backward()
        opt_d.step()
        obj["disc_state_dict"] = d.state_dict()
        obj["optimizer_d_state_dict"] = opt_d.state_dict()
    torch.save(obj, path)
    return obj


@pytest.mark.parametrize("layer_scale", [False, True])
def test_imported_generator_equals_reference(tmp_path, layer_scale):
    path = tmp_path / "seed.tar"
    obj = write_seed_file(path, layer_scale=layer_scale)
    model, info = ckpt_io.load_denoiser(path)           # the seed file taken directly
    assert info["model_args"]["layer_scale"] is layer_scale
    assert info["model_args"]["width"] == W and info["model_args"]["depth"] == DEPTH
    x = torch.randn(3, D, 57, generator=torch.Generator().manual_seed(5)) * 3
    with torch.no_grad():
        got = model(x)
        want = ref_generator(obj["denoiser_state_dict"], x, DEPTH)
    rel = (got - want).abs().max() / want.abs().max()
    assert rel <= 1e-5
    assert (got - x).abs().max() > 1e-2      # the weights were used (not the identity)


def test_imported_discriminator_equals_reference(tmp_path):
    path = tmp_path / "seed.tar"
    obj = write_seed_file(path)
    ckpt = seed_checkpoint(path, D, None)
    d = build_discriminator(ckpt["disc_args"])
    d.load_state_dict(ckpt["discriminator"])
    d.eval()
    z = torch.randn(2, D, 45, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        score, feats = d(z)
        ref_score, ref_feats = ref_discriminator(obj["disc_state_dict"], z, 5)
    assert ckpt["disc_args"]["groups"] == 4 and ckpt["disc_args"]["dilations"] == [1, 2, 4, 8, 16]
    torch.testing.assert_close(score, ref_score, rtol=1e-5, atol=1e-6)
    assert len(feats) == len(ref_feats) == 6
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_import_writes_a_run_every_command_takes(tmp_path):
    path = tmp_path / "seed.tar"
    obj = write_seed_file(path, prefix="module.")       # saved from a DDP wrapper
    identity = {"kind": "random", "seed": 0, "arch": {"latent_dim": D}}
    report = import_seed(path, tmp_path / "run", D, identity, {"seed": 0})
    assert report.step == 1234 and report.optimisers
    latest = ckpt_io.load_checkpoint(tmp_path / "run" / ckpt_io.LATEST)
    assert latest["step"] == 1234 and latest["codec_identity"] == identity
    g = build_denoiser(latest["model_args"])
    g.load_state_dict(latest["denoiser"])
    opt = torch.optim.AdamW(g.parameters(), lr=4e-4)
    opt.load_state_dict(latest["opt_g"])                  # the seed's optimiser state fits
    seed_state = obj["optimizer_g_state_dict"]["state"]
    for i, st in opt.state_dict()["state"].items():
        torch.testing.assert_close(st["exp_avg"], seed_state[i]["exp_avg"])
    model, info = ckpt_io.load_denoiser(tmp_path / "run" / ckpt_io.BEST)
    assert info["step"] == 1234 and info["origin"]["kind"] == "seed"
    with pytest.raises(SeedCheckpointError, match="already holds a run"):
        import_seed(path, tmp_path / "run", D, identity, {})


def test_seed_presets_sizes():
    medium = SeedDenoiser(1024, 512, 4)
    large = SeedDenoiser(1024, 768, 8)
    assert math.isclose(count_parameters(medium), 9.5e6, rel_tol=0.01)
    assert math.isclose(count_parameters(large), 39.4e6, rel_tol=0.01)


@pytest.mark.parametrize("case, match", [
    ("missing", "missing key 'denoiser_state_dict'"),
    ("latent", "takes 64-channel latents, but the codec's latents have 1024"),
    ("shapes", "does not fit the seed architecture"),
    ("noblocks", "no blocks"),
    ("garbage", "not a readable checkpoint"),
    ("list", "not a checkpoint dict"),
])
def test_bad_seed_files_are_refused_with_the_reason(tmp_path, case, match):
    path = tmp_path / f"{case}.tar"
    if case == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif case == "list":
        torch.save([1, 2, 3], path)
    else:
        obj = write_seed_file(path, with_d=False)
        sd = obj["denoiser_state_dict"]
        if case == "missing":
            obj = {"iteration": 3, "disc_state_dict": {}}
        elif case == "shapes":
            sd["blocks.1.pwconv1.weight"] = torch.zeros(7, W)
        elif case == "noblocks":
            obj["denoiser_state_dict"] = {k: v for k, v in sd.items()
                                          if not k.startswith("blocks.")}
        torch.save(obj, path)
    latent = 1024 if case == "latent" else D
    with pytest.raises(SeedCheckpointError, match=match) as err:
        seed_checkpoint(path, latent, None)
    assert str(path) in str(err.value)


def test_import_then_fine_tune_continues_the_step_count(tiny_latent_cache, tmp_path):
    from cleancodec.infer.seed_import import run_import_seed
    from cleancodec.trainer.config import load_train_config
    from cleancodec.trainer.loop import fit
    from tests.helpers import REPO, TINY_PROFILE

    cache, run = tiny_latent_cache("zarr"), tmp_path / "run"
    path = tmp_path / "seed.tar"
    write_seed_file(path, iteration=40)
    report = run_import_seed(path, run, REPO / TINY_PROFILE, None)  # the profile's tiny codec
    assert report.train_args[0] == "train.preset=seed-medium"
    imported = ckpt_io.load_checkpoint(run / ckpt_io.LATEST)
    quick = ["train.steps=42", "train.data.batch_size=8", "train.data.num_workers=0",
             "train.progress=false", "train.val_every=2", "train.log_every=1"]
    cfg = load_train_config(REPO / TINY_PROFILE, None, [*report.train_args, *quick])
    assert cfg.denoiser.arch == "seed" and cfg.loss.feature_matching_reduce == "sum"
    out = fit(cfg, cache, run)
    assert out["step"] == 42
    tuned = ckpt_io.load_checkpoint(run / ckpt_io.LATEST)
    assert tuned["opt_g"]["state"][0]["step"] == imported["opt_g"]["state"][0]["step"] + 2
    moved = [(tuned["denoiser"][k] - v).abs().max() for k, v in imported["denoiser"].items()]
    assert max(moved) > 0
    with pytest.raises(ckpt_io.CheckpointError, match="imported: train it with"):
        fit(load_train_config(REPO / TINY_PROFILE, None, quick), cache, run)


@pytest.mark.parametrize("preset, millions", [("seed-medium", 9.5), ("seed-large", 39.4)])
def test_seed_presets_build_the_seed_models_and_recipe(preset, millions):
    from cleancodec.core.config import to_dict
    from cleancodec.trainer.config import load_train_config

    cfg = load_train_config(None, preset)
    g = build_denoiser({"latent_dim": 1024, **to_dict(cfg.denoiser)})
    d = build_discriminator({"latent_dim": 1024, **to_dict(cfg.discriminator)})
    assert isinstance(g, SeedDenoiser) and isinstance(d, SeedDiscriminator)
    assert math.isclose(count_parameters(g), millions * 1e6, rel_tol=0.01)
    assert d.model_args["dilations"] == [1, 2, 4, 8, 16] and d.model_args["groups"] == 16
    assert (cfg.loss.feature_matching, cfg.loss.feature_matching_reduce) == (1.0, "sum")
    assert cfg.ema_decay is None and cfg.optim.warmup_steps == 0
    assert (cfg.data.batch_size, cfg.steps) == (256, 40000)
    # a key written on the command line wins over the preset's
    mine = load_train_config(None, preset, ["train.loss.feature_matching=2", "train.steps=5"])
    assert (mine.loss.feature_matching, mine.loss.feature_matching_reduce) == (2.0, "sum")
    assert mine.steps == 5


def test_feature_matching_sum_is_the_seeds_sum_over_layers():
    from cleancodec.trainer.losses import feature_matching

    fake = [torch.ones(2, 3, 4), torch.zeros(2, 3, 5)]
    real = [torch.zeros(2, 3, 4), torch.full((2, 3, 5), 3.0)]
    assert feature_matching(fake, real, "sum").item() == pytest.approx(4.0)
    assert feature_matching(fake, real).item() == pytest.approx(2.0)


def test_denoise_takes_the_seed_file_and_its_imported_run_alike(tmp_path):
    import numpy as np
    import soundfile as sf
    from click.testing import CliRunner

    from cleancodec.cli import main
    from tests.helpers import REPO, TINY_PROFILE

    seed_file = tmp_path / "seed.tar"
    write_seed_file(seed_file)
    wave = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.05
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", wave, 16000)
    conf = str(REPO / TINY_PROFILE)
    runner = CliRunner()
    result = runner.invoke(main, ["import-seed", str(seed_file), str(tmp_path / "run"),
                                  "--conf", conf])
    assert result.exit_code == 0, result.output
    assert "fine-tune: cleancodec train" in result.output
    outs = []
    for name, ckpt in (("direct", seed_file), ("imported", tmp_path / "run" / "best.pt")):
        result = runner.invoke(main, ["denoise", str(tmp_path / "in"), str(tmp_path / name),
                                      "--conf", conf, "--checkpoint", str(ckpt)])
        assert result.exit_code == 0, result.output
        outs.append(sf.read(tmp_path / name / "a.wav")[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0]).max() > 0
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x00" * 64)
    result = runner.invoke(main, ["import-seed", str(bad), str(tmp_path / "run2"), "--conf", conf])
    assert result.exit_code == 1 and "bad.tar: not a readable checkpoint" in result.output


@pytest.mark.slow
def test_export_takes_an_imported_seed_run(tmp_path):
    from cleancodec.infer.export import export_denoiser

    seed_file = tmp_path / "seed.tar"
    write_seed_file(seed_file)
    model, info = ckpt_io.load_denoiser(seed_file)
    report = export_denoiser(model, tmp_path / "seed.onnx", info, seed_file)
    assert report.max_abs_diff <= 1e-4

"""trainer.models: shapes, identity at step 0, normalisation buffers, presets, spectral norm."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from cleancodec.trainer.config import load_train_config
from cleancodec.trainer.models import Denoiser, Discriminator, build_denoiser, count_parameters

ROOT = Path(__file__).resolve().parents[1]


def test_denoiser_is_identity_at_init_and_keeps_shape():
    torch.manual_seed(0)
    model = Denoiser(latent_dim=16, width=8, depth=2)
    model.set_latent_stats(torch.randn(16), torch.rand(16) + 0.5)
    z = torch.randn(3, 16, 25) * 4 + 2
    out = model(z)
    assert out.shape == z.shape
    assert torch.equal(out, z)


def test_denoiser_output_depends_on_time_context_after_training_step():
    torch.manual_seed(0)
    model = Denoiser(latent_dim=8, width=8, depth=1, kernel_size=7)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    z = torch.randn(1, 8, 30)
    base = model(z)
    z2 = z.clone()
    z2[:, :, 15] += 1.0
    diff = (model(z2) - base).abs().sum(dim=1)[0]
    changed = (diff > 1e-6).nonzero().flatten().tolist()
    assert 15 in changed and min(changed) >= 15 - 3 and max(changed) <= 15 + 3 and len(changed) > 1


def test_normalisation_buffers_are_saved_and_scale_the_residual():
    model = Denoiser(latent_dim=4, width=8, depth=1)
    model.set_latent_stats(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 10.0, 0.0, 2.0]))
    state = model.state_dict()
    assert torch.equal(state["stats.mean"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert state["stats.std"][2] > 0, "a constant channel must not divide by zero"
    other = Denoiser(latent_dim=4, width=8, depth=1)
    other.load_state_dict(state)
    z = torch.randn(2, 4, 5)
    torch.testing.assert_close(other.normalize(z), model.normalize(z))
    torch.nn.init.constant_(model.head.bias, 1.0)       # residual of 1 normalised unit
    delta = (model(z) - z)[0, :, 0]
    torch.testing.assert_close(delta, model.stats.std)


@pytest.mark.parametrize("preset,expected_m", [("medium", 9.5), ("large", 39.4)])
def test_presets_have_the_specified_size(preset, expected_m):
    cfg = load_train_config(ROOT / "conf" / "train.yaml", preset=preset)
    model = build_denoiser({"latent_dim": 1024, **vars(cfg.denoiser)})
    assert count_parameters(model) / 1e6 == pytest.approx(expected_m, abs=0.1)


def test_discriminator_scores_and_features():
    torch.manual_seed(0)
    disc = Discriminator(latent_dim=16, channels=12, dilations=[1, 2, 4], groups=3)
    score, feats = disc(torch.randn(5, 16, 20))
    assert score.shape == (5,)
    assert len(feats) == 4 and all(f.shape == (5, 12, 20) for f in feats)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv1d)]
    assert convs and all(parametrize.is_parametrized(c, "weight") for c in convs)


def test_discriminator_spectral_norm_bounds_the_weights():
    torch.manual_seed(0)
    disc = Discriminator(latent_dim=8, channels=8, dilations=[1], groups=2)
    with torch.no_grad():
        disc.stem.parametrizations.weight.original.mul_(100.0)
    for _ in range(30):                                # power iterations converge in train mode
        disc(torch.randn(2, 8, 10))
    w = disc.stem.weight.flatten(1)
    assert float(torch.linalg.matrix_norm(w.detach(), ord=2)) == pytest.approx(1.0, rel=0.05)


def test_discriminator_score_is_a_time_average():
    """With per-frame convs (kernel 1) the score of x repeated three times equals that of x."""
    torch.manual_seed(0)
    disc = Discriminator(latent_dim=4, channels=4, dilations=[1], kernel_size=1, groups=1).eval()
    x = torch.randn(1, 4, 8)
    s1, _ = disc(x)
    s2, _ = disc(torch.cat([x, x, x], dim=-1))
    s3, _ = disc(x[:, :, :4])
    torch.testing.assert_close(s1, s2)
    assert not torch.allclose(s1, s3)


def test_activation_checkpointing_gives_identical_outputs_and_grads():
    torch.manual_seed(0)
    model = Denoiser(latent_dim=16, width=32, depth=3)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)   # a non-identity model, so grads reach the blocks
    z = torch.randn(2, 16, 20)

    def run(flag: bool):
        model.zero_grad()
        model.activation_checkpointing = flag
        out = model(z)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out_a, grads_a = run(False)
    out_b, grads_b = run(True)
    torch.testing.assert_close(out_a, out_b)
    assert any(g.abs().sum() > 0 for g in grads_a)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb)
    assert "activation_checkpointing" not in model.model_args


def _randomised(model: Denoiser, seed: int = 0) -> Denoiser:
    """A denoiser whose GRN gains and head are non-zero (a fresh one is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("kind, window", [("window", 5), ("none", 0)])
def test_local_statistics_keep_a_perturbation_within_the_receptive_field(kind, window):
    model = _randomised(Denoiser(latent_dim=8, width=8, depth=2, kernel_size=7, grn=kind,
                                 grn_window=window))
    rf = model.receptive_field()
    assert rf == 2 * (3 + window // 2)
    z = torch.randn(1, 8, 120)
    z2 = z.clone()
    z2[:, :, 60] += 3.0
    with torch.no_grad():
        diff = (model(z2) - model(z)).abs().amax(dim=1)[0]
    changed = (diff > 0).nonzero().flatten()
    assert changed.min() >= 60 - rf and changed.max() <= 60 + rf and 60 in changed.tolist()


def test_global_statistics_reach_every_frame():
    model = _randomised(Denoiser(latent_dim=8, width=8, depth=2, grn="global"))
    assert model.receptive_field() is None
    z = torch.randn(1, 8, 120)
    z2 = z.clone()
    z2[:, :, 60] += 3.0
    with torch.no_grad():
        diff = (model(z2) - model(z)).abs().amax(dim=1)[0]
    assert diff[0] > 0 and diff[-1] > 0


def test_window_grn_chunked_equals_whole_to_float_rounding():
    model = _randomised(Denoiser(latent_dim=8, width=16, depth=3, grn="window", grn_window=9))
    rf = model.receptive_field()
    z = torch.randn(1, 8, 300, dtype=torch.float64)
    model = model.double()
    with torch.no_grad():
        whole = model(z)
        start, stop = 100, 180
        part = model(z[..., start - rf:stop + rf])[..., rf:rf + stop - start]
    torch.testing.assert_close(part, whole[..., start:stop], rtol=1e-12, atol=1e-12)


def test_model_args_without_grn_keys_load_as_the_global_kind():
    new = _randomised(Denoiser(latent_dim=8, width=8, depth=1))
    old_args = {k: v for k, v in new.model_args.items() if k not in ("grn", "grn_window")}
    old = Denoiser(**old_args)
    old.load_state_dict(new.state_dict())
    z = torch.randn(2, 8, 40)
    with torch.no_grad():
        assert torch.equal(old.eval()(z), new(z))
    assert old.model_args["grn"] == "global"
    with pytest.raises(ValueError, match="grn"):
        Denoiser(latent_dim=8, width=8, depth=1, grn="windowed")


def test_window_grn_gradients_stay_finite_on_a_silent_channel():
    from cleancodec.trainer.models import GlobalResponseNorm

    torch.manual_seed(0)
    grn = GlobalResponseNorm(6, kind="window", window=5)
    with torch.no_grad():
        grn.gamma.normal_()
    x = torch.randn(2, 20, 6)
    x[:, :, 2] = 0.0                       # a channel that is exactly zero for a whole window
    x.requires_grad_(True)
    grn(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(grn.gamma.grad).all()

"""trainer.models: shapes, identity at step 0, normalisation buffers, presets, spectral norm."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from cleancodec.trainer.config import load_train_config
from cleancodec.trainer.models import Denoiser, Discriminator, count_parameters

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
    model = Denoiser(1024, **vars(cfg.denoiser))
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

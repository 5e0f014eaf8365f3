"""trainer.losses: hinge, R1, feature matching, latent L1, and the weighted loss dicts."""
from __future__ import annotations

import pytest
import torch

from cleancodec.trainer.config import LossConfig
from cleancodec.trainer.losses import (
    adversarial_g,
    discriminator_losses,
    feature_matching,
    generator_losses,
    hinge_fake,
    hinge_real,
    latent_l1,
    r1_penalty,
)


class LinearCritic(torch.nn.Module):
    """score = sum(w * x) over channels and frames / F; one feature = w * x."""

    def __init__(self, d: int, f: int):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(d, 1))
        self.f = f

    def forward(self, x):
        feat = self.w * x
        return feat.sum(dim=(1, 2)) / self.f, [feat]


def test_hinge_terms():
    assert hinge_real(torch.tensor([2.0, 1.5])) == 0
    assert hinge_real(torch.tensor([0.0, -1.0])) == pytest.approx(1.5)
    assert hinge_fake(torch.tensor([-3.0])) == 0
    assert hinge_fake(torch.tensor([1.0, 0.0])) == pytest.approx(1.5)
    assert adversarial_g(torch.tensor([1.0, 3.0])) == pytest.approx(-2.0)


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    d, f = 3, 5
    critic = LinearCritic(d, f)
    x = torch.randn(4, d, f, requires_grad=True)
    scores, _ = critic(x)
    expected = (critic.w.detach() ** 2).sum() * f / f ** 2   # grad per element is w / f
    assert r1_penalty(scores, x).item() == pytest.approx(float(expected), rel=1e-5)


def test_feature_matching_does_not_push_real_features():
    fake = [torch.ones(2, 3, requires_grad=True)]
    real = [torch.zeros(2, 3, requires_grad=True)]
    loss = feature_matching(fake, real)
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert real[0].grad is None and fake[0].grad is not None


def test_latent_l1():
    assert latent_l1(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])) == pytest.approx(1.5)


def test_discriminator_losses_weighting_and_detached_fake():
    d, f = 4, 6
    critic = LinearCritic(d, f)
    real = torch.randn(3, d, f)
    g_out = torch.randn(3, d, f, requires_grad=True)
    w = LossConfig(r1_gamma=20.0)
    out = discriminator_losses(critic, real, g_out * 2, w)
    assert set(out) == {"d/hinge_real", "d/hinge_fake", "d/r1", "d/loss"}
    expected = out["d/hinge_real"] + out["d/hinge_fake"] + 10.0 * out["d/r1"]
    torch.testing.assert_close(out["d/loss"], expected)
    out["d/loss"].backward()
    assert g_out.grad is None, "the D step must not reach the generator"
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0


def test_generator_losses_weighting_and_gradient_path():
    d, f = 4, 6
    critic = LinearCritic(d, f).requires_grad_(False)
    clean = torch.randn(2, d, f)
    fake = torch.randn(2, d, f, requires_grad=True)
    w = LossConfig(adversarial=1.5, feature_matching=2.0, latent_l1=10.0)
    out = generator_losses(critic, clean, fake, w)
    assert set(out) == {"g/adversarial", "g/feature_matching", "g/latent_l1", "g/loss"}
    torch.testing.assert_close(out["g/loss"], 1.5 * out["g/adversarial"]
                               + 2.0 * out["g/feature_matching"] + 10.0 * out["g/latent_l1"])
    assert out["g/latent_l1"].item() == pytest.approx(float((fake.detach() - clean).abs().mean()))
    out["g/loss"].backward()
    assert fake.grad is not None and critic.w.grad is None


def test_generator_losses_vanish_when_fake_equals_clean():
    critic = LinearCritic(3, 4)
    clean = torch.randn(2, 3, 4)
    out = generator_losses(critic, clean, clean.clone(), LossConfig())
    assert out["g/latent_l1"] == 0 and out["g/feature_matching"] == 0

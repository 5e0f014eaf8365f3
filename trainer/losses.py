"""GAN objective on latent sequences: hinge + R1 for D; adversarial + feature matching +
latent L1 for G.

The two ``*_losses`` functions return dicts keyed ``group/name`` (``d/...``, ``g/...``); the
``d/loss`` and ``g/loss`` entries are the weighted totals to back-propagate, the rest are the
unweighted terms that get logged. Weights come from :class:`trainer.config.LossConfig`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cleancodec.trainer.config import LossConfig

DiscriminatorFn = Callable[[Tensor], tuple[Tensor, list[Tensor]]]


def hinge_real(scores: Tensor) -> Tensor:
    """D hinge term on real scores ``Tensor[B]``: ``mean(relu(1 - s))``."""
    return torch.relu(1.0 - scores).mean()


def hinge_fake(scores: Tensor) -> Tensor:
    """D hinge term on fake scores ``Tensor[B]``: ``mean(relu(1 + s))``."""
    return torch.relu(1.0 + scores).mean()


def r1_penalty(real_scores: Tensor, real_inputs: Tensor) -> Tensor:
    """``E ||d D(x) / d x||^2`` on real inputs (not yet weighted by gamma / 2).

    Parameters
    ----------
    real_scores : Tensor[B]
        D's scores of ``real_inputs`` (graph kept).
    real_inputs : Tensor[B x D x F]
        Leaf tensor with ``requires_grad=True``.
    """
    (grad,) = torch.autograd.grad(real_scores.sum(), real_inputs, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()


def adversarial_g(fake_scores: Tensor) -> Tensor:
    """G's hinge adversarial term ``-mean(D(fake))``."""
    return -fake_scores.mean()


def feature_matching(fake_features: list[Tensor], real_features: list[Tensor],
                     reduce: str = "mean") -> Tensor:
    """Mean (or, ``reduce="sum"``, the seed's sum) over D's layers of the mean L1 distance
    between fake and (detached) real features."""
    terms = torch.stack([(f.float() - r.detach().float()).abs().mean()
                         for f, r in zip(fake_features, real_features)])
    return terms.sum() if reduce == "sum" else terms.mean()


def latent_l1(pred: Tensor, target: Tensor) -> Tensor:
    """``mean |pred - target|`` over all elements."""
    return (pred.float() - target.float()).abs().mean()


def discriminator_losses(disc: DiscriminatorFn, real: Tensor, fake: Tensor,
                         weights: LossConfig) -> dict[str, Tensor]:
    """D step: hinge on real vs detached fake, plus R1 on real.

    Real and fake go through D in one batch (one forward per step, as DDP expects).

    Parameters
    ----------
    disc : callable
        ``Tensor[2B x D x F] -> (Tensor[2B], features)`` (the DDP-wrapped D in training).
    real, fake : Tensor[B x D x F]
        Normalised clean and denoised latents; ``fake`` is detached here.

    Returns
    -------
    dict
        ``d/hinge_real``, ``d/hinge_fake``, ``d/r1`` and the weighted total ``d/loss``.
    """
    real = real.detach().requires_grad_(True)
    scores, _ = disc(torch.cat([real, fake.detach()], dim=0))
    scores = scores.float()
    real_scores, fake_scores = scores.split(real.shape[0])
    out = {
        "d/hinge_real": hinge_real(real_scores),
        "d/hinge_fake": hinge_fake(fake_scores),
        "d/r1": r1_penalty(real_scores, real),
    }
    out["d/loss"] = out["d/hinge_real"] + out["d/hinge_fake"] + 0.5 * weights.r1_gamma * out["d/r1"]
    return out


def generator_losses(disc: DiscriminatorFn, real: Tensor, fake: Tensor,
                     weights: LossConfig) -> dict[str, Tensor]:
    """G step: adversarial + feature matching (through D) + latent L1 to clean.

    All three terms work on latents normalised with the cache statistics, so the weights do not
    depend on the codec's latent scale (random-init and pretrained DAC latents differ by orders
    of magnitude); the latent L1 is thus a per-channel, std-weighted L1.

    Parameters
    ----------
    disc : callable
        The discriminator module itself (not its DDP wrapper; its parameters are frozen by the
        caller for this step).
    real, fake : Tensor[B x D x F]
        Normalised clean and denoised latents (``fake`` keeps its graph to G).

    Returns
    -------
    dict
        ``g/adversarial``, ``g/feature_matching``, ``g/latent_l1`` and the weighted ``g/loss``.
    """
    with torch.no_grad():
        _, real_feats = disc(real.detach())
    fake_scores, fake_feats = disc(fake)
    out = {
        "g/adversarial": adversarial_g(fake_scores.float()),
        "g/feature_matching": feature_matching(fake_feats, real_feats,
                                               weights.feature_matching_reduce),
        "g/latent_l1": latent_l1(fake, real),
    }
    out["g/loss"] = (weights.adversarial * out["g/adversarial"]
                     + weights.feature_matching * out["g/feature_matching"]
                     + weights.latent_l1 * out["g/latent_l1"])
    return out

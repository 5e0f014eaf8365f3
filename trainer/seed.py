"""The "Clean Before You Code" research models (the seed recipe), as cleancodec architectures.

The seed's generator and discriminator differ from :mod:`cleancodec.trainer.models` in ways
that change their functions, so they are separate classes whose parameter names equal the
seed's checkpoint keys (``stem``, ``blocks.N.dwconv``, ``blocks.N.pwconv1``, ``final``,
``per_frame``, ``temporal``, ``head``): a seed ``denoiser_state_dict`` / ``disc_state_dict`` loads
into them as it is, and their parameters come in the seed's order, so its optimiser states load
too.

Shapes: latents are raw (never normalised) ``Tensor[B x D x F]``, D = 1024 for DAC-16k.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

SEED_ARCH = "seed"
SEED_EPS = 1e-6          # LayerNorm and GRN epsilon of the seed's blocks
SEED_KERNEL = 7          # depthwise kernel of the seed's blocks (padding 3)
SEED_MLP_RATIO = 4       # inner width of a block: 4 W
SEED_D_CHANNELS = 512    # discriminator hidden channels
SEED_D_KERNEL = 5        # discriminator temporal kernel
SEED_D_GROUPS = 16       # groups of the discriminator's temporal convolutions
SEED_D_DILATIONS = (1, 2, 4, 8, 16)
SEED_SLOPE = 0.2         # LeakyReLU slope of the discriminator


class SeedGRN(nn.Module):
    """ConvNeXt-V2 global response normalisation with ``[1 x 1 x C]`` parameters.

    ``x: Tensor[B x F x C]`` → same shape: ``g = ||x||_2`` over time (per channel),
    ``n = g / (mean_C(g) + eps)``, ``gamma * (x * n) + beta + x``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, channels))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)      # [B, 1, C]
        n = g / (g.mean(dim=-1, keepdim=True) + SEED_EPS)
        return self.gamma * (x * n) + self.beta + x


class SeedBlock(nn.Module):
    """Depthwise conv (k 7) → LayerNorm → Linear W→4W → GELU → GRN → Linear 4W→W → optional
    layer scale ``gamma[W]``, plus the residual. ``x: Tensor[B x W x F]`` → same shape."""

    def __init__(self, width: int, layer_scale: bool, layer_scale_init: float):
        super().__init__()
        inner = SEED_MLP_RATIO * width
        # own parameter first: the seed registers gamma on the block, so it leads the block's
        # parameters in .parameters() (the order its optimiser states are indexed by)
        self.gamma = nn.Parameter(torch.full((width,), float(layer_scale_init))) \
            if layer_scale else None
        self.dwconv = nn.Conv1d(width, width, SEED_KERNEL, padding=SEED_KERNEL // 2, groups=width)
        self.norm = nn.LayerNorm(width, eps=SEED_EPS)
        self.pwconv1 = nn.Linear(width, inner)
        self.act = nn.GELU()
        self.grn = SeedGRN(inner)
        self.pwconv2 = nn.Linear(inner, width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).transpose(1, 2)                                  # [B, F, W]
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h))))).transpose(1, 2)
        if self.gamma is not None:
            h = self.gamma[None, :, None] * h
        return x + h


class SeedDenoiser(nn.Module):
    """The seed generator: ``z + final(blocks(stem(z)))`` on raw latents.

    1x1 conv stem ``D → W``, ``depth`` :class:`SeedBlock` s, 1x1 conv ``W → D`` initialised to
    zero (the identity at step 0); no latent normalisation and no LayerNorm before the head.
    Medium: W 512, 4 blocks (9.49 M parameters at D 1024); Large: W 768, 8 blocks (39.46 M).

    It offers the interface the trainer and inference use on :class:`models.Denoiser`
    (``model_args``, ``set_latent_stats``, ``normalize``, ``receptive_field``); the statistics
    are ignored, since the seed trains on raw latents.
    """

    def __init__(self, latent_dim: int, width: int, depth: int, layer_scale: bool = False,
                 layer_scale_init: float = 1e-6, arch: str = SEED_ARCH):
        super().__init__()
        if arch != SEED_ARCH:
            raise ValueError(f"SeedDenoiser builds arch {SEED_ARCH!r}, got {arch!r}")
        self.model_args: dict[str, Any] = {
            "arch": SEED_ARCH, "latent_dim": int(latent_dim), "width": int(width),
            "depth": int(depth), "layer_scale": bool(layer_scale),
            "layer_scale_init": float(layer_scale_init),
        }
        self.stem = nn.Conv1d(latent_dim, width, 1)
        self.blocks = nn.Sequential(*(SeedBlock(width, layer_scale, layer_scale_init)
                                      for _ in range(depth)))
        self.final = nn.Conv1d(width, latent_dim, 1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        self.activation_checkpointing = False

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """No-op: the seed model works on raw latents."""

    def normalize(self, z: Tensor) -> Tensor:
        """The identity (the discriminator sees raw latents, as in the seed)."""
        return z

    def forward(self, z: Tensor) -> Tensor:
        """``Tensor[B x D x F]`` noisy raw latents → denoised raw latents (same shape)."""
        h = self.stem(z)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            for block in self.blocks:
                h = checkpoint(block, h, use_reentrant=False)
        else:
            h = self.blocks(h)
        return z + self.final(h)

    def conv_reach(self) -> int:
        """Frames each side that the depthwise convolutions alone reach."""
        return self.model_args["depth"] * (SEED_KERNEL // 2)

    def receptive_field(self) -> int | None:
        """``None``: the global GRN makes every output frame depend on the whole sequence."""
        return None


def _sn(conv: nn.Conv1d) -> nn.Conv1d:
    """Spectral norm through torch's hook-based API (state keys ``weight_orig``, ``weight_u``,
    ``weight_v``, as in the seed's checkpoints)."""
    return nn.utils.spectral_norm(conv)


class SeedDiscriminator(nn.Module):
    """The seed discriminator on raw latents.

    ``per_frame``: 1x1 conv ``D → C`` (no bias), LeakyReLU, 1x1 conv ``C → C`` (no bias),
    LeakyReLU; ``temporal``: one residual block per dilation, each a conv ``C → C`` (kernel 5,
    groups 16, padding ``2 d``), LeakyReLU, 1x1 conv (no bias); ``head``: LeakyReLU, 1x1 conv
    ``C → 1``; score = mean over time. Spectral norm on every conv.

    Features for matching: after ``per_frame`` and after each block. The seed's head applies its
    LeakyReLU in place on the last block's output, which is also its last feature, so the last
    feature it matches is that activated output; this class returns the same values.
    """

    def __init__(self, latent_dim: int, channels: int = SEED_D_CHANNELS,
                 dilations: list[int] | tuple[int, ...] = SEED_D_DILATIONS,
                 kernel_size: int = SEED_D_KERNEL, groups: int = SEED_D_GROUPS,
                 negative_slope: float = SEED_SLOPE, arch: str = SEED_ARCH):
        super().__init__()
        if arch != SEED_ARCH:
            raise ValueError(f"SeedDiscriminator builds arch {SEED_ARCH!r}, got {arch!r}")
        self.model_args: dict[str, Any] = {
            "arch": SEED_ARCH, "latent_dim": int(latent_dim), "channels": int(channels),
            "dilations": [int(d) for d in dilations], "kernel_size": int(kernel_size),
            "groups": int(groups), "negative_slope": float(negative_slope),
        }
        self.negative_slope = float(negative_slope)
        self.per_frame = nn.Sequential(
            _sn(nn.Conv1d(latent_dim, channels, 1, bias=False)),
            nn.LeakyReLU(negative_slope),
            _sn(nn.Conv1d(channels, channels, 1, bias=False)),
            nn.LeakyReLU(negative_slope),
        )
        self.temporal = nn.ModuleList(
            nn.Sequential(
                _sn(nn.Conv1d(channels, channels, kernel_size, padding=d * (kernel_size - 1) // 2,
                              dilation=d, groups=groups)),
                nn.LeakyReLU(negative_slope),
                _sn(nn.Conv1d(channels, channels, 1, bias=False)),
            )
            for d in dilations
        )
        self.head = nn.Sequential(nn.LeakyReLU(negative_slope), _sn(nn.Conv1d(channels, 1, 1)))

    def forward(self, z: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Score raw latents ``Tensor[B x D x F]`` → ``(Tensor[B], features)``, each feature
        ``Tensor[B x C x F]``."""
        h = self.per_frame(z)
        features = [h]
        for block in self.temporal:
            h = h + block(h)
            features.append(h)
        activated = self.head[0](h)
        features[-1] = activated
        return self.head[1](activated).mean(dim=(1, 2)), features

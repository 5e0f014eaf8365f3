"""The latent denoiser (generator) and the latent-sequence discriminator.

Shapes: latents are ``Tensor[B x D x F]`` (D = the codec's latent dim from the cache manifest,
F = frames at 50 frames/s).

Both models work internally on *normalised* latents: DAC latents are far from unit scale, so
each model holds the cache's per-channel mean and std as buffers (set once from the training
data with :meth:`Denoiser.set_latent_stats`, then saved in the state dict). Callers pass raw
latents and the :class:`Denoiser` returns raw latents.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.checkpoint import checkpoint

STD_FLOOR = 1e-5  # smallest per-channel std used for normalisation (constant channels)


class LatentStats(nn.Module):
    """Per-channel mean / std buffers and the normalisation they define."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("std", torch.ones(latent_dim))

    @torch.no_grad()
    def set(self, mean: Tensor, std: Tensor) -> None:
        """Store ``mean`` / ``std`` (each ``Tensor[D]``); std is floored at ``STD_FLOOR``."""
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std).clamp_min(STD_FLOOR))

    def normalize(self, z: Tensor) -> Tensor:
        """``Tensor[B x D x F]`` raw latents → zero-mean, unit-std latents per channel."""
        return (z - self.mean[:, None]) / self.std[:, None]


GRN_KINDS = ("global", "window", "none")


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 global response normalisation, channels last.

    ``x: Tensor[B x F x C]`` → same shape. Starts as the identity (gamma = beta = 0). Each
    channel's response ``g`` is its L2 norm over time, divided by the mean over channels:

    - ``kind="global"``: over the whole sequence the model sees (ConvNeXt-V2 as published; the
      output then depends on where audio is cut into chunks);
    - ``kind="window"``: over a centred window of ``window`` frames around each frame (every
      statistic local in time: chunked = whole once the context covers the receptive field);
    - ``kind="none"``: no response normalisation (the block is a plain ConvNeXt-V1 MLP).
    """

    def __init__(self, channels: int, eps: float = 1e-6, kind: str = "global", window: int = 0):
        super().__init__()
        if kind not in GRN_KINDS:
            raise ValueError(f"grn must be one of {GRN_KINDS}, got {kind!r}")
        if kind == "window" and (window < 1 or window % 2 == 0):
            raise ValueError(f"grn_window must be a positive odd number of frames, got {window}")
        self.kind, self.window, self.eps = kind, window, eps
        if kind != "none":  # no unused parameters (DDP requires every one to get a gradient)
            self.gamma = nn.Parameter(torch.zeros(channels))
            self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "none":
            return x
        if self.kind == "global":
            return self._scale(x, torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True))
        # RMS over the window (the window's length cancels in g / mean(g))
        power = torch.nn.functional.avg_pool1d(
            x.float().pow(2).transpose(1, 2), self.window, stride=1,
            padding=self.window // 2, count_include_pad=False)
        return self.respond(x, power.transpose(1, 2))

    def respond(self, x: Tensor, power: Tensor) -> Tensor:
        """The ``window`` kind given each frame's mean power over its window: ``x[B x F x C]``,
        ``power[B x F x C]`` (float32) → ``[B x F x C]`` (the streamed layer computes
        ``power`` from the frames it keeps)."""
        # floor at eps^2: sqrt's gradient is infinite at 0 (a silent channel)
        return self._scale(x, power.clamp_min(self.eps ** 2).sqrt().to(x.dtype))  # [B, F, C]

    def _scale(self, x: Tensor, g: Tensor) -> Tensor:
        """``x`` scaled by its responses ``g`` (``[B x 1 x C]`` or ``[B x F x C]``)."""
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * n) + self.beta + x


class ConvNeXtBlock1d(nn.Module):
    """Depthwise conv, LayerNorm, Linear W→rW, GELU, GRN, Linear rW→W, plus the residual.

    ``x: Tensor[B x W x F]`` → ``Tensor[B x W x F]``.
    """

    def __init__(self, width: int, kernel_size: int = 7, mlp_ratio: int = 4, eps: float = 1e-6,
                 grn: str = "global", grn_window: int = 0):
        super().__init__()
        self.dwconv = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.pw1 = nn.Linear(width, mlp_ratio * width)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(mlp_ratio * width, eps=eps, kind=grn, window=grn_window)
        self.pw2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).transpose(1, 2)       # [B, F, W]
        h = self.pw2(self.grn(self.act(self.pw1(self.norm(h)))))
        return x + h.transpose(1, 2)


class Denoiser(nn.Module):
    """Noisy latents → clean latents.

    A 1x1 conv stem ``D → W``, ``depth`` ConvNeXt-1D blocks, a LayerNorm and a 1x1 conv
    ``W → D`` initialised to zero, added to the input (global residual), so the model is the
    identity at step 0. The residual is predicted in normalised units and scaled back by the
    cache std: ``out = z + std * head(blocks(stem(normalize(z))))``.

    Parameters
    ----------
    latent_dim : int
        D, the codec latent dim (1024 for DAC-16k).
    width : int
        W, channels inside the blocks.
    depth : int
        Number of ConvNeXt blocks.
    kernel_size : int
        Depthwise temporal kernel (odd).
    mlp_ratio : int
        Inner expansion of each block.
    norm_eps : float
        LayerNorm / GRN epsilon.
    grn, grn_window : str, int
        Response normalisation of the blocks (see :class:`GlobalResponseNorm`). ``"global"``
        is what checkpoints without these keys were trained with, so they load unchanged.
    """

    def __init__(self, latent_dim: int, width: int, depth: int, kernel_size: int = 7,
                 mlp_ratio: int = 4, norm_eps: float = 1e-6, grn: str = "global",
                 grn_window: int = 0):
        super().__init__()
        self.model_args: dict[str, Any] = {
            "latent_dim": int(latent_dim), "width": int(width), "depth": int(depth),
            "kernel_size": int(kernel_size), "mlp_ratio": int(mlp_ratio),
            "norm_eps": float(norm_eps), "grn": str(grn), "grn_window": int(grn_window),
        }
        self.stats = LatentStats(latent_dim)
        self.stem = nn.Conv1d(latent_dim, width, 1)
        self.blocks = nn.Sequential(
            *(ConvNeXtBlock1d(width, kernel_size, mlp_ratio, norm_eps, grn, grn_window)
              for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.head = nn.Conv1d(width, latent_dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Training-time memory option (not part of the architecture): recompute each block's
        # activations in the backward pass instead of keeping them.
        self.activation_checkpointing = False

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel statistics of the cache (``Tensor[D]`` each)."""
        self.stats.set(mean, std)

    def normalize(self, z: Tensor) -> Tensor:
        """Raw ``Tensor[B x D x F]`` → normalised latents (what the discriminator sees)."""
        return self.stats.normalize(z)

    def forward(self, z: Tensor) -> Tensor:
        """Denoise raw latents.

        Parameters
        ----------
        z : Tensor[B x D x F]
            Noisy pre-quantisation latents.

        Returns
        -------
        Tensor[B x D x F]
            Denoised latents (raw scale, same dtype as the computation).
        """
        h = self.stem(self.normalize(z))
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.blocks:
                h = checkpoint(block, h, use_reentrant=False)
        else:
            h = self.blocks(h)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        return z + self.head(h) * self.stats.std[:, None]

    def conv_reach(self) -> int:
        """Frames each side that the depthwise convolutions alone reach (the receptive field
        when no global statistic is involved)."""
        return self.model_args["depth"] * (self.model_args["kernel_size"] // 2)

    def receptive_field(self) -> int | None:
        """Frames on each side of an output frame that can change it (``None`` when a global
        statistic makes every frame depend on the whole sequence)."""
        args = self.model_args
        if args["grn"] == "global":
            return None
        per_block = args["kernel_size"] // 2 + (args["grn_window"] // 2
                                               if args["grn"] == "window" else 0)
        return args["depth"] * per_block


def _sn_conv(c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1,
             groups: int = 1) -> nn.Module:
    pad = dilation * (kernel_size - 1) // 2
    return spectral_norm(nn.Conv1d(c_in, c_out, kernel_size, padding=pad, dilation=dilation,
                                   groups=groups))


class DiscriminatorBlock(nn.Module):
    """Dilated grouped temporal conv → LeakyReLU → 1x1 conv → LeakyReLU, plus residual."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, groups: int,
                 negative_slope: float):
        super().__init__()
        self.temporal = _sn_conv(channels, channels, kernel_size, dilation, groups)
        self.mix = _sn_conv(channels, channels, 1)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.mix(self.act(self.temporal(x))))


class Discriminator(nn.Module):
    """Scores latent sequences: real (clean) high, fake (denoised) low.

    Per-frame 1x1 channel mixing ``D → C``, a stack of dilated grouped temporal convs with
    residuals, and a 1-channel head averaged over time. Spectral norm on every conv.

    Parameters
    ----------
    latent_dim : int
        D.
    channels : int
        C, hidden channels (divisible by ``groups``).
    dilations : list of int
        One residual block per dilation.
    kernel_size : int
        Temporal kernel (odd).
    groups : int
        Groups of the temporal convs.
    negative_slope : float
        LeakyReLU slope.
    """

    def __init__(self, latent_dim: int, channels: int = 256, dilations: list[int] | tuple[int, ...]
                 = (1, 2, 4, 8), kernel_size: int = 3, groups: int = 8,
                 negative_slope: float = 0.2):
        super().__init__()
        self.model_args: dict[str, Any] = {
            "latent_dim": int(latent_dim), "channels": int(channels),
            "dilations": [int(d) for d in dilations], "kernel_size": int(kernel_size),
            "groups": int(groups), "negative_slope": float(negative_slope),
        }
        self.stem = _sn_conv(latent_dim, channels, 1)
        self.act = nn.LeakyReLU(negative_slope)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(channels, kernel_size, d, groups, negative_slope) for d in dilations
        )
        self.head = _sn_conv(channels, 1, 1)

    def forward(self, z: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Score normalised latents.

        Parameters
        ----------
        z : Tensor[B x D x F]
            Latents normalised with the cache statistics (:meth:`Denoiser.normalize`).

        Returns
        -------
        score : Tensor[B]
            Head output averaged over time.
        features : list of Tensor[B x C x F]
            Activations after the stem and after each block (for feature matching).
        """
        h = self.act(self.stem(z))
        features = [h]
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return self.head(h).mean(dim=(1, 2)), features


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


CLEANCODEC_ARCH = "cleancodec"  # model_args without "arch": every checkpoint before the seed


def build_denoiser(model_args: dict[str, Any]) -> nn.Module:
    """The generator that ``model_args`` (a checkpoint's, or a config's with ``latent_dim``)
    describes: :class:`Denoiser`, or :class:`~cleancodec.trainer.seed.SeedDenoiser` for
    ``arch: seed`` (which takes only ``width``, ``depth`` and the layer-scale keys)."""
    from cleancodec.trainer.seed import SEED_ARCH, SeedDenoiser

    args = dict(model_args)
    arch = args.pop("arch", CLEANCODEC_ARCH)
    if arch == SEED_ARCH:
        return SeedDenoiser(args["latent_dim"], args["width"], args["depth"],
                            bool(args.get("layer_scale", False)),
                            float(args.get("layer_scale_init", 1e-6)))
    if arch != CLEANCODEC_ARCH:
        raise ValueError(f"unknown denoiser arch {arch!r} (known: {CLEANCODEC_ARCH}, {SEED_ARCH})")
    for key in ("layer_scale", "layer_scale_init"):
        args.pop(key, None)
    return Denoiser(**args)


def build_discriminator(disc_args: dict[str, Any]) -> nn.Module:
    """The discriminator that ``disc_args`` describes (``arch: seed`` or cleancodec's)."""
    from cleancodec.trainer.seed import SEED_ARCH, SeedDiscriminator

    args = dict(disc_args)
    arch = args.pop("arch", CLEANCODEC_ARCH)
    if arch == SEED_ARCH:
        return SeedDiscriminator(**args)
    if arch != CLEANCODEC_ARCH:
        raise ValueError(
            f"unknown discriminator arch {arch!r} (known: {CLEANCODEC_ARCH}, {SEED_ARCH})")
    return Discriminator(**args)

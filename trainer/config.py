"""The ``train`` section of a profile, as dataclasses.

Every number the trainer uses has its default here, written once: model sizes, loss weights,
optimiser settings, intervals, seeds. Profiles (``conf/*.yaml``) and ``train.key=value``
command-line overrides change them (see :mod:`cleancodec.core.config`). Model presets
(``medium``, ``large``) are named sets of :class:`DenoiserConfig` values; :func:`load_train_config`
applies the chosen one under the keys the user wrote, and the resolved config is what checkpoints
record and what ``cleancodec config`` prints. Each dataclass checks its own values in
``__post_init__`` (:func:`cleancodec.core.config.require`), naming the key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cleancodec.core.config import (
    ConfigError,
    from_dict,
    load_section,
    require,
    require_positive_ints,
    to_dict,
    written_section,
)


@dataclass
class DenoiserConfig:
    """ConvNeXt-1D denoiser size (the latent dim comes from the cache manifest)."""

    width: int = 512
    depth: int = 4
    kernel_size: int = 7
    mlp_ratio: int = 4
    norm_eps: float = 1e-6
    # Response normalisation of the blocks: global | window | none (see models.py). "none" keeps
    # every statistic local in time (chunked = whole denoising, the smallest look-ahead). Held-out
    # gain on the demo cache (bench/demo_choices.py: DAC-16k at random init, demo profile, 300
    # steps, seed 0): global 0.8502, none 0.8511 (+0.1 %); tiny profile, 300 steps, mean of 2
    # seeds: global 0.9135, window-9 0.9137, window-25 0.9137, none 0.9136.
    grn: str = "none"
    grn_window: int = 0      # frames of the "window" GRN (odd)

    def __post_init__(self) -> None:
        require_positive_ints(self, "train.denoiser", ("width", "depth"))
        require(self.kernel_size % 2 == 1, "train.denoiser.kernel_size",
                f"must be odd, got {self.kernel_size}")


@dataclass
class DiscriminatorConfig:
    """Latent-sequence discriminator: 1x1 mixing, dilated grouped temporal convs, 1-ch head."""

    channels: int = 256
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    kernel_size: int = 3
    groups: int = 8
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        require_positive_ints(self, "train.discriminator", ("channels",))
        require(self.kernel_size % 2 == 1, "train.discriminator.kernel_size",
                f"must be odd, got {self.kernel_size}")
        require(self.groups >= 1 and self.channels % self.groups == 0,
                "train.discriminator.channels",
                f"({self.channels}) must be divisible by groups ({self.groups})")


@dataclass
class LossConfig:
    """Weights of the GAN objective (losses are logged as ``group/name``)."""

    adversarial: float = 1.0       # G: -D(fake)
    feature_matching: float = 2.0  # G: L1 between D features of fake and real
    latent_l1: float = 10.0        # G: L1(denoised, clean), on normalised latents
    r1_gamma: float = 20.0         # D: (gamma / 2) * E ||grad_x D(real)||^2


@dataclass
class OptimConfig:
    """AdamW for G and D, linear learning-rate warm-up, gradient-norm clipping."""

    lr_g: float = 4e-4
    lr_d: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    grad_clip: float = 10.0

    def __post_init__(self) -> None:
        require(len(self.betas) == 2, "train.optim.betas",
                f"must hold two numbers, got {self.betas!r}")


RESIDENT_MODES = ("auto", "off", "ram", "gpu")


@dataclass
class DataConfig:
    """How windows are read from the cache."""

    batch_size: int = 16
    num_workers: int = 2
    prefetch_factor: int = 2
    # Order: blocks of `shuffle_block` consecutive pairs (one run of a shard) in a seeded order,
    # mixed within every `shuffle_buffer` positions (1: a plain permutation). A webdataset
    # stream (remote or older tars) shuffles through a buffer of `shuffle_buffer` pairs.
    shuffle_block: int = 8
    shuffle_buffer: int = 256
    # Keep the K noisy variants of a clean window in one batch (a batch of B pairs then holds
    # B / K clean windows, each under K noises: "repeated augmentation", Hoffer et al., CVPR
    # 2020). A batch reads each clean latent once: bench/loader.py measures the speed-up.
    group_variants: bool = True
    # Resident: auto | off | ram | gpu. ram / gpu load the train split once and index it there;
    # auto picks gpu, then ram, when the split fits `resident_share` of the free memory.
    resident: str = "auto"
    resident_share: float = 0.5
    epoch_windows: int | None = None  # webdataset: windows per rank per epoch (None: all / ranks)
    stats_windows: int = 512          # train windows sampled for the latent mean / std
    val_batch_size: int = 32
    val_max_windows: int | None = 2048  # cap on val windows per validation (None: all)
    max_corrupt_share: float = 0.01   # stop when more of the windows read fail their checks

    def __post_init__(self) -> None:
        require_positive_ints(self, "train.data", ("batch_size", "val_batch_size",
                                                   "stats_windows", "shuffle_block",
                                                   "shuffle_buffer"))
        require(self.resident in RESIDENT_MODES, "train.data.resident",
                f"must be one of {'|'.join(RESIDENT_MODES)}, got {self.resident!r}")
        require(0 < self.resident_share <= 1, "train.data.resident_share",
                f"must be in (0, 1], got {self.resident_share!r}")
        require(self.num_workers >= 0, "train.data.num_workers",
                f"must be >= 0, got {self.num_workers}")


@dataclass
class TrainConfig:
    """The ``train`` section of a profile."""

    name: str | None = None           # run name; default run dir is runs/<name>
    preset: str | None = "medium"     # key of ``presets`` applied to ``denoiser`` (None: as is)
    presets: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "medium": {"width": 512, "depth": 4},   # ~9.5 M parameters at latent dim 1024
        "large": {"width": 768, "depth": 8},    # ~39.5 M parameters
    })
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 100000
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    checkpoint_every: int = 500       # steps between writes of latest.pt
    milestones: list[int] = field(  # steps that also keep step_<N>.pt
        default_factory=lambda: [10000, 50000, 100000])
    device: str = "auto"              # auto | cpu | cuda | cuda:N (torchrun sets the index)
    bf16: bool = True                 # bf16 autocast, CUDA only
    activation_checkpointing: bool = False  # recompute denoiser blocks in backward: less memory
    num_threads: int = 0              # torch intra-op threads on CPU (0: torch's default)
    max_skipped_steps: int = 10       # non-finite loss/gradient steps in a row before stopping
    # EMA of G's weights, used by denoise (None: off). 0.999 is the usual choice for GAN
    # generators; measured on the tiny profile (300 steps, 2 seeds): held-out gain 0.9136 with
    # the EMA vs 0.9150 with G's own weights (lower is better). See README, "EMA".
    ema_decay: float | None = 0.999
    progress: bool = True             # tqdm bar on the main rank

    def __post_init__(self) -> None:
        require_positive_ints(self, "train", ("steps", "log_every", "val_every",
                                              "checkpoint_every", "max_skipped_steps"))

    @property
    def run_name(self) -> str:
        """``name``, else the preset, else ``run``."""
        return self.name or self.preset or "run"


def resolve_preset(cfg: TrainConfig, preset: str | None = None,
                   written: Collection[str] = ()) -> TrainConfig:
    """Fill ``cfg.denoiser`` from a model preset, leaving the keys the user wrote alone.

    Precedence, lowest first: the schema's default, the preset, the profile, the command line.
    A preset sets only the denoiser keys absent from ``written``; a key the user wrote keeps its
    value even when it equals the schema default (``train.denoiser.width=512`` with
    ``train.preset=large`` gives width 512, depth 8).

    Parameters
    ----------
    cfg : TrainConfig
        As loaded from the profile and the overrides (denoiser keys not written hold defaults).
    preset : str or None
        Overrides ``cfg.preset`` when given.
    written : collection of str
        The ``train.denoiser`` keys the user wrote (see :func:`load_train_config`).

    Returns
    -------
    TrainConfig
        A copy whose ``denoiser`` carries the preset's values under the written ones and whose
        ``preset`` names it.

    Raises
    ------
    ConfigError
        When the preset is not defined in ``cfg.presets`` or holds a key or value the denoiser
        does not accept.
    """
    name = preset or cfg.preset
    if not name:
        return cfg
    if name not in cfg.presets:
        raise ConfigError(
            f"train.preset {name!r} is not defined; known presets: {sorted(cfg.presets) or 'none'}"
        )
    where = f"train.presets.{name}"
    values = dict(cfg.presets[name] or {})
    from_dict(DenoiserConfig, values, where)  # its keys and types, even where overruled
    unset = {key: value for key, value in values.items() if key not in written}
    denoiser = from_dict(DenoiserConfig, {**to_dict(cfg.denoiser), **unset}, where)
    return dataclasses.replace(cfg, preset=name, denoiser=denoiser)


# Keys added after runs had started, with the value that keeps such a run's behaviour: a run
# resumed from a checkpoint whose saved config lacks one of them gets that value.
ADDED_KEYS: dict[tuple[str, str], Any] = {("data", "group_variants"): False}


def config_for_resume(cfg: TrainConfig, saved: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with each of :data:`ADDED_KEYS` that the run's ``saved`` config (a checkpoint's
    ``config``) lacks set to its old value; also the ``section.key=value`` changes made."""
    changed = []
    for (section, key), old in ADDED_KEYS.items():
        stored = saved.get(section)
        current = getattr(cfg, section)
        if isinstance(stored, dict) and key not in stored and getattr(current, key) != old:
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(current, **{key: old})})
            changed.append(f"{section}.{key}={old}")
    return cfg, changed


def load_train_config(path: str | Path | None, preset: str | None = None,
                      overrides: Sequence[str] = ()) -> TrainConfig:
    """The train config a run uses: profile, command line and preset, resolved and checked.

    The one resolving function of the ``train`` section: ``cleancodec train`` runs with its
    result and ``cleancodec config`` prints it. A ``train.denoiser`` key written in the profile
    (its ``base:`` chain included) or in an override is *explicit* and wins over the preset;
    the preset fills the denoiser keys nobody wrote (see :func:`resolve_preset`).

    Parameters
    ----------
    path : str, Path or None
        YAML profile (``None``: defaults).
    preset : str or None
        Overrides ``train.preset``.
    overrides : sequence of str
        ``train.key=value`` items, applied after the profile.
    """
    cfg = load_section(path, "train", TrainConfig, overrides)
    denoiser = written_section(path, "train", overrides).get("denoiser")
    return resolve_preset(cfg, preset, set(denoiser) if isinstance(denoiser, dict) else set())

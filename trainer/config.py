"""The ``train`` section of a profile, as dataclasses.

Every number the trainer uses has its default here, written once: model sizes, loss weights,
optimiser settings, intervals, seeds. Profiles (``conf/*.yaml``) and ``train.key=value``
command-line overrides change them (see :mod:`cleancodec.core.config`). Model presets
(``medium``, ``large``, ``seed-medium``, ``seed-large``) are named sets of train values (the
denoiser's, and for the seed presets every section's); :func:`load_train_config` applies the
chosen one under the keys the user wrote, and the resolved config is what checkpoints
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

ARCHS = ("cleancodec", "seed")   # model architectures (trainer/models.py, trainer/seed.py)
FM_REDUCTIONS = ("mean", "sum")


@dataclass
class DenoiserConfig:
    """ConvNeXt-1D denoiser size (the latent dim comes from the cache manifest)."""

    # cleancodec | seed. "seed" is the seed research code's generator (raw latents, global GRN,
    # no LayerNorm before the head): it uses width, depth and the layer-scale keys only.
    arch: str = "cleancodec"
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
    layer_scale: bool = False     # seed arch: a learnt per-channel scale on each block's output
    layer_scale_init: float = 1e-6  # its initial value

    def __post_init__(self) -> None:
        require(self.arch in ARCHS, "train.denoiser.arch",
                f"must be one of {'|'.join(ARCHS)}, got {self.arch!r}")
        require_positive_ints(self, "train.denoiser", ("width", "depth"))
        require(self.kernel_size % 2 == 1, "train.denoiser.kernel_size",
                f"must be odd, got {self.kernel_size}")


@dataclass
class DiscriminatorConfig:
    """Latent-sequence discriminator: 1x1 mixing, dilated grouped temporal convs, 1-ch head."""

    arch: str = "cleancodec"  # cleancodec | seed (the seed's discriminator: trainer/seed.py)
    channels: int = 256
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    kernel_size: int = 3
    groups: int = 8
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        require(self.arch in ARCHS, "train.discriminator.arch",
                f"must be one of {'|'.join(ARCHS)}, got {self.arch!r}")
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
    feature_matching_reduce: str = "mean"  # over D's layers: mean | sum (the seed's)
    latent_l1: float = 10.0        # G: L1(denoised, clean), on the latents D sees
    r1_gamma: float = 20.0         # D: (gamma / 2) * E ||grad_x D(real)||^2

    def __post_init__(self) -> None:
        require(self.feature_matching_reduce in FM_REDUCTIONS, "train.loss.feature_matching_reduce",
                f"must be one of {'|'.join(FM_REDUCTIONS)}, got {self.feature_matching_reduce!r}")


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


def seed_recipe(width: int, depth: int) -> dict[str, Any]:
    """The seed's generator of ``width`` x ``depth`` with its discriminator and training recipe:
    D 512 channels, kernel 5, groups 16, dilations 1-16; feature matching summed over D's
    layers with weight 1; no warm-up, no EMA, fp32; batch 256, 40,000 steps."""
    return {
        "denoiser": {"arch": "seed", "width": width, "depth": depth},
        "discriminator": {"arch": "seed", "channels": 512, "dilations": [1, 2, 4, 8, 16],
                          "kernel_size": 5, "groups": 16},
        "loss": {"feature_matching": 1.0, "feature_matching_reduce": "sum"},
        "optim": {"warmup_steps": 0},
        "data": {"batch_size": 256},
        "steps": 40000, "milestones": [10000, 25000, 40000], "ema_decay": None, "bf16": False,
    }


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
    preset: str | None = "medium"     # key of ``presets`` applied under written keys (None: off)
    # A preset maps denoiser keys (the short form) and/or train keys: sections as mappings
    # ("discriminator": {...}) and plain keys ("steps": 40000).
    presets: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "medium": {"width": 512, "depth": 4},   # ~9.5 M parameters at latent dim 1024
        "large": {"width": 768, "depth": 8},    # ~39.5 M parameters
        # The seed research code's recipe ("Clean Before You Code"): its models, losses and
        # optimiser settings on a cleancodec cache (docs/seed.md lists every difference).
        "seed-medium": seed_recipe(512, 4),     # 9.49 M parameters
        "seed-large": seed_recipe(768, 8),      # 39.46 M parameters
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


PRESET_SECTIONS = ("denoiser", "discriminator", "loss", "optim", "data")
NOT_IN_PRESETS = ("name", "preset", "presets")


def preset_values(cfg: TrainConfig, name: str) -> dict[str, Any]:
    """Preset ``name`` as a mapping of train keys (``{"denoiser": {...}, "steps": ...}``): its
    short-form denoiser keys (``width``, ``depth``, …) moved under ``denoiser``."""
    where = f"train.presets.{name}"
    values = dict(cfg.presets[name] or {})
    denoiser_keys = {f.name for f in dataclasses.fields(DenoiserConfig)}
    out: dict[str, Any] = {"denoiser": {k: values.pop(k) for k in list(values)
                                        if k in denoiser_keys}}
    for key, value in values.items():
        if key in PRESET_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} must be a mapping of train.{key} keys")
            out[key] = {**out.get(key, {}), **value}
        elif key in NOT_IN_PRESETS or key not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise ConfigError(f"{where}: {key!r} is not a train key a preset can set")
        else:
            out[key] = value
    return out


def resolve_preset(cfg: TrainConfig, preset: str | None = None,
                   written: dict[str, Any] | Collection[str] = ()) -> TrainConfig:
    """Apply a preset to ``cfg``, leaving the keys the user wrote alone.

    Precedence, lowest first: the schema's default, the preset, the profile, the command line.
    A preset sets only the keys absent from ``written``; a key the user wrote keeps its value
    even when it equals the schema default (``train.denoiser.width=512`` with
    ``train.preset=large`` gives width 512, depth 8).

    Parameters
    ----------
    cfg : TrainConfig
        As loaded from the profile and the overrides (keys not written hold defaults).
    preset : str or None
        Overrides ``cfg.preset`` when given.
    written : mapping or collection of str
        The ``train`` keys the user wrote, as :func:`cleancodec.core.config.written_section`
        returns them; a plain collection of names means ``train.denoiser`` keys.

    Returns
    -------
    TrainConfig
        A copy carrying the preset's values under the written ones, whose ``preset`` names it.

    Raises
    ------
    ConfigError
        When the preset is not defined in ``cfg.presets`` or holds a key or value the train
        schema does not accept.
    """
    name = preset or cfg.preset
    if not name:
        return cfg
    if name not in cfg.presets:
        raise ConfigError(
            f"train.preset {name!r} is not defined; known presets: {sorted(cfg.presets) or 'none'}"
        )
    if not isinstance(written, dict):
        written = {"denoiser": {key: True for key in written}}
    where = f"train.presets.{name}"
    values = preset_values(cfg, name)
    changes: dict[str, Any] = {"preset": name}
    for key, value in values.items():
        if key in PRESET_SECTIONS:
            section_cls = type(getattr(cfg, key))
            from_dict(section_cls, value, f"{where}.{key}")  # keys and types, even where overruled
            mine = written.get(key)
            mine = mine if isinstance(mine, dict) else {}
            unset = {k: v for k, v in value.items() if k not in mine}
            changes[key] = from_dict(section_cls, {**to_dict(getattr(cfg, key)), **unset},
                                     f"{where}.{key}")
        elif key not in written:
            changes[key] = value
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# Keys added after runs had started, with the value that keeps such a run's behaviour: a run
# resumed from a checkpoint whose saved config lacks one of them gets that value.
ADDED_KEYS: dict[tuple[str, str], Any] = {
    ("data", "group_variants"): False,
    ("denoiser", "arch"): "cleancodec", ("denoiser", "layer_scale"): False,
    ("denoiser", "layer_scale_init"): 1e-6, ("discriminator", "arch"): "cleancodec",
    ("loss", "feature_matching_reduce"): "mean",
}


def with_added_keys(section: str, saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's saved ``section`` with the :data:`ADDED_KEYS` it lacks filled with their old
    values (so a run started before them compares equal to the same config today)."""
    if not isinstance(saved, dict):
        return saved
    filled = dict(saved)
    for (sec, key), old in ADDED_KEYS.items():
        if sec == section:
            filled.setdefault(key, old)
    return filled


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
    result and ``cleancodec config`` prints it. A ``train`` key written in the profile (its
    ``base:`` chain included) or in an override is *explicit* and wins over the preset; the
    preset fills the keys nobody wrote (see :func:`resolve_preset`).

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
    return resolve_preset(cfg, preset, written_section(path, "train", overrides))

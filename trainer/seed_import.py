"""Read the seed's checkpoints (``torch.save`` ``.tar`` files) and turn them into cleancodec runs.

A seed checkpoint is a dict with ``denoiser_state_dict`` (required here), ``disc_state_dict``,
``optimizer_g_state_dict``, ``optimizer_d_state_dict`` and ``iteration``. It is read with
``weights_only=True`` (no code is unpickled); the generator's width, depth and layer scale and
the discriminator's channels, groups, kernel and block count come from the tensor shapes.

:func:`seed_checkpoint` converts one into a cleancodec checkpoint dict in memory (what
``cleancodec denoise --checkpoint CKPT.tar`` uses); :func:`import_seed` writes a run folder
(``latest.pt``, ``best.pt``, ``best.json``) that every command takes and that
``cleancodec train --run`` fine-tunes from, continuing the step count at ``iteration``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cleancodec.core.atomic import write_json_atomic
from cleancodec.core.hashing import sha256_file
from cleancodec.trainer import checkpoint as ckpt_io
from cleancodec.trainer.seed import SEED_ARCH, SeedDenoiser, SeedDiscriminator

G_KEY, D_KEY = "denoiser_state_dict", "disc_state_dict"
OPT_G_KEY, OPT_D_KEY, STEP_KEY = "optimizer_g_state_dict", "optimizer_d_state_dict", "iteration"
DDP_PREFIX = "module."
ORIGIN = "seed"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_TEMPORAL = re.compile(r"^temporal\.(\d+)\.")


class SeedCheckpointError(ckpt_io.CheckpointError):
    """A file is not a usable seed checkpoint (the message names it and says why)."""


@dataclass
class SeedImport:
    """What :func:`import_seed` wrote."""

    run_dir: Path
    model_args: dict[str, Any]
    disc_args: dict[str, Any] | None
    step: int
    optimisers: bool
    parameters: int
    train_args: list[str]


def is_seed_checkpoint(obj: Any) -> bool:
    """True for a loaded dict in the seed's layout (it has ``denoiser_state_dict``)."""
    return isinstance(obj, dict) and G_KEY in obj and "format_version" not in obj


def read_seed_file(path: str | Path) -> dict[str, Any]:
    """Load ``path`` with ``weights_only=True`` and check it is a seed checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise SeedCheckpointError(f"{path}: seed checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign / torn files
        raise SeedCheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise SeedCheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    if G_KEY not in obj:
        raise SeedCheckpointError(
            f"{path}: missing key {G_KEY!r} (found: {', '.join(map(str, obj)) or 'nothing'})")
    return obj


def strip_ddp(state: Any, path: Path, key: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SeedCheckpointError(f"{path}: {key} is not a state dict of tensors")
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        return {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def _shape(state: dict[str, torch.Tensor], key: str, path: Path, what: str) -> tuple[int, ...]:
    if key not in state:
        raise SeedCheckpointError(f"{path}: {what} has no {key!r}; not the seed's model")
    return tuple(state[key].shape)


def _count(state: dict[str, torch.Tensor], pattern: re.Pattern[str]) -> int:
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def denoiser_args(state: dict[str, torch.Tensor], path: Path, latent_dim: int) -> dict[str, Any]:
    """``model_args`` of the seed generator whose weights are ``state``.

    Raises SeedCheckpointError when the stem's input is not ``latent_dim`` channels or the
    shapes fit no width / depth.
    """
    what = G_KEY
    stem = _shape(state, "stem.weight", path, what)
    if len(stem) != 3 or stem[2] != 1:
        raise SeedCheckpointError(f"{path}: stem.weight has shape {list(stem)}, not [W, D, 1]")
    width, d_in = stem[0], stem[1]
    if d_in != latent_dim:
        raise SeedCheckpointError(
            f"{path}: the denoiser takes {d_in}-channel latents, but the codec's latents have "
            f"{latent_dim} channels")
    depth = _count(state, _BLOCK)
    if depth == 0:
        raise SeedCheckpointError(f"{path}: {what} has no blocks.N.* weights")
    return {"arch": SEED_ARCH, "latent_dim": int(latent_dim), "width": int(width),
            "depth": int(depth), "layer_scale": "blocks.0.gamma" in state,
            "layer_scale_init": 1e-6}


def discriminator_args(state: dict[str, torch.Tensor], path: Path,
                       latent_dim: int) -> dict[str, Any]:
    """``disc_args`` of the seed discriminator whose weights are ``state``."""
    what = D_KEY
    first = _shape(state, "per_frame.0.weight_orig", path, what)
    channels = first[0]
    if first[1] != latent_dim:
        raise SeedCheckpointError(
            f"{path}: the discriminator takes {first[1]}-channel latents, not {latent_dim}")
    blocks = _count(state, _TEMPORAL)
    if blocks == 0:
        raise SeedCheckpointError(f"{path}: {what} has no temporal.N.* weights")
    conv = _shape(state, "temporal.0.0.weight_orig", path, what)
    if len(conv) != 3 or conv[1] == 0 or channels % conv[1]:
        raise SeedCheckpointError(f"{path}: temporal.0.0.weight_orig has shape {list(conv)}")
    return {"arch": SEED_ARCH, "latent_dim": int(latent_dim), "channels": int(channels),
            "dilations": [2 ** i for i in range(blocks)], "kernel_size": int(conv[2]),
            "groups": int(channels // conv[1]), "negative_slope": 0.2}


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, key: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise SeedCheckpointError(
            f"{path}: {key} does not fit the seed architecture its shapes suggest "
            f"({'; '.join(line.strip() for line in first[:4])})") from exc


def _optimiser_state(params, state: Any, path: Path, key: str, lr: float) -> dict | None:
    """Check that a seed optimiser state fits ``params`` (AdamW) and return it as torch writes
    it; None when the file has none."""
    if state is None:
        return None
    opt = torch.optim.AdamW(params, lr=lr)
    try:
        opt.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as exc:
        raise SeedCheckpointError(f"{path}: {key} does not fit the model ({exc})") from exc
    return opt.state_dict()


def seed_checkpoint(path: str | Path, latent_dim: int, codec_identity: dict[str, Any] | None,
                    config: dict[str, Any] | None = None, obj: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """A cleancodec checkpoint dict (the layout :mod:`trainer.checkpoint` documents) made from
    the seed file ``path``.

    Parameters
    ----------
    path : str or Path
        The seed ``.tar``.
    latent_dim : int
        The codec's latent channels (1024 for DAC-16k); a file for another size is refused.
    codec_identity : dict or None
        The codec the latents come from, recorded in the checkpoint (None: unknown).
    config : dict or None
        The resolved ``train`` config to record (what a fine-tune must match).
    obj : dict or None
        The file already loaded by :func:`read_seed_file`.
    """
    path = Path(path)
    obj = obj if obj is not None else read_seed_file(path)
    g_state = strip_ddp(obj[G_KEY], path, G_KEY)
    model_args = denoiser_args(g_state, path, latent_dim)
    denoiser = SeedDenoiser(**model_args)
    _load(denoiser, g_state, path, G_KEY)
    disc_args, d_state, discriminator = None, None, None
    if obj.get(D_KEY) is not None:
        d_state = strip_ddp(obj[D_KEY], path, D_KEY)
        disc_args = discriminator_args(d_state, path, latent_dim)
        discriminator = SeedDiscriminator(**disc_args)
        _load(discriminator, d_state, path, D_KEY)
    step = obj.get(STEP_KEY, 0)
    if not isinstance(step, int) or step < 0:
        raise SeedCheckpointError(f"{path}: {STEP_KEY} is {step!r}, not a step count")
    lr_g = float(((config or {}).get("optim") or {}).get("lr_g", 4e-4))
    lr_d = float(((config or {}).get("optim") or {}).get("lr_d", 1e-4))
    opt_g = _optimiser_state(denoiser.parameters(), obj.get(OPT_G_KEY), path, OPT_G_KEY, lr_g)
    opt_d = None
    if discriminator is not None:
        opt_d = _optimiser_state(discriminator.parameters(), obj.get(OPT_D_KEY), path,
                                 OPT_D_KEY, lr_d)
    return {
        "format_version": ckpt_io.FORMAT_VERSION,
        "model_args": model_args,
        "disc_args": disc_args,
        "denoiser": denoiser.state_dict(),
        "denoiser_ema": None,
        "discriminator": discriminator.state_dict() if discriminator is not None else None,
        "opt_g": opt_g,
        "opt_d": opt_d,
        "step": step,
        "rng": ckpt_io.capture_rng(),
        "config": config or {},
        "codec_identity": codec_identity,
        "cache_manifest_digest": None,
        "val": {},
        "best_val": float("inf"),
        "origin": {"kind": ORIGIN, "file": str(path), "iteration": step},
    }


def import_seed(path: str | Path, run_dir: str | Path, latent_dim: int,
                codec_identity: dict[str, Any] | None, config: dict[str, Any],
                overwrite: bool = False, train_args: list[str] | None = None) -> SeedImport:
    """Write a cleancodec run folder from the seed checkpoint ``path``.

    ``latest.pt`` (full: weights, discriminator and optimisers when the file has them, step =
    ``iteration``), ``best.pt`` (light) and ``best.json`` (what checkpoint discovery reads).
    An existing run folder with checkpoints is refused unless ``overwrite``.
    """
    path, run_dir = Path(path), Path(run_dir)
    obj = read_seed_file(path)
    ckpt = seed_checkpoint(path, latent_dim, codec_identity, config, obj)
    ckpt["origin"].update(sha256=sha256_file(path), train_args=list(train_args or []))
    latest, best = run_dir / ckpt_io.LATEST, run_dir / ckpt_io.BEST
    if not overwrite and (latest.exists() or best.exists()):
        raise SeedCheckpointError(
            f"{run_dir}: already holds a run ({latest.name} / {best.name}); choose another "
            "folder or pass --overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_io.save_atomic(ckpt, latest)
    light = {**ckpt, "opt_g": None, "opt_d": None}
    ckpt_io.save_atomic(light, best)
    write_json_atomic(run_dir / ckpt_io.BEST_INFO, {
        "format_version": ckpt_io.FORMAT_VERSION, "step": ckpt["step"],
        "codec_identity": codec_identity, "cache_manifest_digest": None, "val": {},
        "best_val": None, "origin": ckpt["origin"]})
    params = sum(t.numel() for t in SeedDenoiser(**ckpt["model_args"]).parameters())
    return SeedImport(run_dir, ckpt["model_args"], ckpt["disc_args"], int(ckpt["step"]),
                      ckpt["opt_g"] is not None, params, list(train_args or []))


def stem_latent_dim(obj: dict[str, Any], path: str | Path) -> int:
    """The latent channels the seed generator in ``obj`` takes (its stem's input)."""
    path = Path(path)
    state = strip_ddp(obj[G_KEY], path, G_KEY)
    stem = _shape(state, "stem.weight", path, G_KEY)
    if len(stem) != 3:
        raise SeedCheckpointError(f"{path}: stem.weight has shape {list(stem)}, not [W, D, 1]")
    return int(stem[1])


SEED_PRESETS = {(512, 4): "seed-medium", (768, 8): "seed-large"}


def train_args_for(model_args: dict[str, Any], disc_args: dict[str, Any] | None,
                   written: dict[str, Any] | None = None) -> list[str]:
    """The ``train.*`` overrides under which ``cleancodec train`` builds exactly these models:
    the seed preset of that size (``seed-medium`` when the size is neither), plus every model
    key that differs from the preset or that the profile wrote (``written``, which would win
    over the preset)."""
    from cleancodec.trainer.config import TrainConfig, preset_values

    written = written or {}
    size = (model_args["width"], model_args["depth"])
    preset = SEED_PRESETS.get(size, "seed-medium")
    defaults = TrainConfig()
    values = preset_values(defaults, preset)
    args = [f"train.preset={preset}"]
    sections = [("denoiser", model_args, ("arch", "width", "depth", "layer_scale"))]
    if disc_args is not None:
        sections.append(("discriminator", disc_args,
                         ("arch", "channels", "dilations", "kernel_size", "groups")))
    for section, found, keys in sections:
        mine = written.get(section) if isinstance(written.get(section), dict) else {}
        for key in keys:
            value = found[key]
            preset_value = values[section].get(key, getattr(getattr(defaults, section), key))
            if key in mine or value != preset_value:
                text = ("[" + ",".join(map(str, value)) + "]" if isinstance(value, list)
                        else str(value).lower() if isinstance(value, bool) else value)
                args.append(f"train.{section}.{key}={text}")
    return args

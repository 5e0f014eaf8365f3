"""Checkpoints: atomic writes, RNG capture, and loading the denoiser back for inference.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it::

    {format_version, model_args, disc_args, denoiser, discriminator, opt_g, opt_d, step,
     rng, config, codec_identity, cache_manifest_digest, val, best_val}

Files in a run directory: ``latest.pt`` (full, for resuming), ``best.pt`` (light: no optimiser
states, by validation latent L1), ``step_<N>.pt`` (full milestones). Every file is written to a
temporary name in the same folder, fsynced, then renamed over the target, so a kill at any
moment leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleancodec.core.atomic import TMP_SUFFIX, atomic_path
from cleancodec.core.oserrors import stage_error
from cleancodec.trainer.models import build_denoiser

FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)
LATEST = "latest.pt"
BEST = "best.pt"
# Other files of a run folder that readers outside the trainer (denoise, watch) look at:
BEST_INFO = "best.json"        # best.pt's step, val figures, codec identity (no torch needed)
RUN_CONFIG = "config.json"     # the resolved config and codec identity, written at start
RUN_SUMMARY = "summary.json"   # final metrics, written when the run ends
TENSOR_KEYS = ("denoiser", "denoiser_ema", "discriminator", "opt_g", "opt_d", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or of an unknown format."""


def milestone_name(step: int) -> str:
    """File name of the milestone kept at ``step``."""
    return f"step_{step}.pt"


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, rename over ``path``."""
    with atomic_path(path, TMP_SUFFIX) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's writer hides the errno ("unexpected pos …")
            raise stage_error(exc, path) from exc
    return Path(path)


def remove_stale_temps(run_dir: str | Path) -> list[Path]:
    """Delete temp files a killed process left in ``run_dir``; returns what was removed."""
    removed = []
    for tmp in Path(run_dir).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# --- RNG state -------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as ``weights_only``-safe values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches).

    Accepts states loaded onto any device (``map_location``): RNG states are set from CPU copies.
    """
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": npst["bit_generator"],
        "state": {"key": npst["key"].cpu().numpy().astype(np.uint32), "pos": npst["pos"]},
        "has_gauss": npst["has_gauss"], "gauss": npst["gauss"],
    })
    random.setstate(_plain_to_python_state(state["python"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _python_state_to_plain(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def _plain_to_python_state(d: dict[str, Any]) -> tuple:
    return d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"]


# --- digests ---------------------------------------------------------------------------------


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (records which cache a run trained on)."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# --- loading ---------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    seed_files: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check its format version.

    With ``seed_files``, a checkpoint of the seed research code (``denoiser_state_dict``, …) is
    converted in memory (:func:`cleancodec.trainer.seed_import.seed_checkpoint`; no codec
    identity: it records none).

    Raises
    ------
    CheckpointError
        Missing file, unreadable / truncated file, or unknown format version (message names
        the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for torn / foreign files
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if seed_files:
        from cleancodec.trainer import seed_import

        if seed_import.is_seed_checkpoint(ckpt):
            stem = seed_import.stem_latent_dim(ckpt, path)
            return seed_import.seed_checkpoint(path, stem, None, obj=ckpt)
    if not isinstance(ckpt, dict) or ckpt.get("format_version") not in KNOWN_FORMAT_VERSIONS:
        version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
        raise CheckpointError(
            f"{path}: not a cleancodec checkpoint of a known format version "
            f"(found {version!r}, this cleancodec reads {list(KNOWN_FORMAT_VERSIONS)})"
        )
    return ckpt


def checkpoint_info(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without its tensors (model_args, step, config, codec identity, val, ...)."""
    return {k: v for k, v in ckpt.items() if k not in TENSOR_KEYS}


def load_denoiser(path: str | Path, map_location: str | torch.device = "cpu",
                  use_ema: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the trained denoiser from a checkpoint alone.

    Parameters
    ----------
    path : str or Path
        ``latest.pt``, ``best.pt`` or ``step_<N>.pt`` of a run, or a seed ``.tar``.
    map_location : str or torch.device
        Where tensors are loaded.
    use_ema : bool
        Take the EMA of the weights when the run kept one (``train.ema_decay``); ``info["ema"]``
        says which weights were loaded.

    Returns
    -------
    model : Denoiser or SeedDenoiser
        In eval mode, on ``map_location``; call ``model(z)`` on raw ``Tensor[B x D x F]``
        latents.
    info : dict
        :func:`checkpoint_info`: ``model_args``, ``step``, ``config``, ``codec_identity``,
        ``val``, ``cache_manifest_digest``, ``format_version``, ...
    """
    ckpt = load_checkpoint(path, map_location, seed_files=True)
    weights = ckpt["denoiser"]
    if use_ema and ckpt.get("denoiser_ema") is not None:
        weights = ckpt["denoiser_ema"]
    try:
        model = build_denoiser(ckpt["model_args"])
        model.load_state_dict(weights)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: denoiser does not match its model_args ({exc})") from exc
    model.to(map_location).eval()
    info = checkpoint_info(ckpt)
    info["ema"] = weights is not ckpt["denoiser"]
    return model, info

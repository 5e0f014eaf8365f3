"""The frozen DAC 16 kHz codec: the only module in cleancodec that imports ``dac``.

Loading rules (in order):

1. ``weights`` is a path → load that file (DAC's release format:
   ``{"state_dict": ..., "metadata": {"kwargs": {...}}}``).
2. ``weights`` is ``None`` → dac's own cache file
   (``~/.cache/descript/dac/weights_16khz_8kbps_0.0.5.pth``); when missing, download it through
   dac's own downloader. Offline with no file → :class:`CodecWeightsError` naming the path, the
   URL and the ``--codec-weights`` option.
3. ``weights == "random"`` → a seeded random-init DAC of any architecture (the real DAC-16k one by
   default, or a tiny one for tests). Every output made with it is meaningless as audio, and
   says so.

The codec is frozen (eval mode, no grad). Shapes: waves are ``Tensor[B x 1 x T]`` at 16 kHz,
latents ``Tensor[B x D x F]`` with ``F = ceil(T / hop)`` (D = 1024, hop = 320 for DAC-16k).
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleancodec.core.hashing import sha256_file
from cleancodec.core.topology import bf16_autocast, pick_device

log = logging.getLogger(__name__)

RANDOM = "random"
PLAIN_TYPES = (int, float, str, list, bool, type(None))  # kwargs recorded in a codec identity
SNAKE_EPS = 1e-9  # dac.nn.layers.snake: alpha + 1e-9 keeps 1 / alpha finite
MODEL_TYPE = "16khz"
MODEL_BITRATE = "8kbps"
MODEL_TAG = "0.0.5"
RANDOM_INIT_BANNER = (
    "RANDOM-INIT CODEC: DAC weights are random (seeded); latents and audio are meaningless "
    "as sound. This run checks the pipeline only."
)

# The DAC-16k architecture (descript-audio-codec release 0.0.5, 16 kHz / 8 kbps), used for
# random-init runs; pretrained runs take the architecture from the weights file itself.
DAC16K_ARCH: dict[str, Any] = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 5, 8],
    "latent_dim": None,
    "decoder_dim": 1536,
    "decoder_rates": [8, 5, 4, 2],
    "n_codebooks": 12,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 16000,
}

# A tiny architecture with the same hop (320) and frame rate (50/s) for fast tests.
TINY_ARCH: dict[str, Any] = {
    "encoder_dim": 4,
    "encoder_rates": [2, 4, 5, 8],
    "latent_dim": 64,
    "decoder_dim": 32,
    "decoder_rates": [8, 5, 4, 2],
    "n_codebooks": 4,
    "codebook_size": 64,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 16000,
}


class CodecWeightsError(RuntimeError):
    """DAC weights could not be found, downloaded or read."""


@dataclass
class CodecConfig:
    """The ``codec`` section of a profile.

    weights: ``None`` (dac's cache / download), a path to a release-format ``.pth``, or
        ``"random"`` for a seeded random-init codec.
    random_seed / random_arch: used only when ``weights == "random"``; ``random_arch`` is
        ``"dac16k"``, ``"tiny"`` or a dict of ``dac.DAC`` keyword arguments.
    device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``… (``auto`` and
        ``cuda`` take this rank's GPU under torchrun: :func:`pipeline.topology.pick_device`).
    bf16: bf16 autocast for the codec's forward passes (meant for GPUs; allowed on CPU).
    batch_size: windows per encoder forward.
    num_threads: torch CPU threads (0 = leave torch's default).
    """

    weights: str | None = None
    random_seed: int = 0
    random_arch: Any = "dac16k"
    device: str = "auto"
    bf16: bool = False
    batch_size: int = 8
    num_threads: int = 0


# --- the dac import, contained ---------------------------------------------------------------
# descript-audiotools imports torchaudio at import time, but cleancodec uses only DAC's tensor
# API; when torchaudio is missing or cannot load (CPU torch 2.13), a placeholder module stands in.


def _torchaudio_placeholder(reason: str) -> types.ModuleType:
    module = types.ModuleType("torchaudio")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)

    def __getattr__(name: str) -> Any:
        raise AttributeError(f"torchaudio is unavailable ({reason}); cleancodec does not use it")

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


def import_dac() -> types.ModuleType:
    """Import and return the ``dac`` package, standing in for torchaudio when it cannot load."""
    if "dac" in sys.modules:
        return sys.modules["dac"]
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError) as exc:
        sys.modules["torchaudio"] = _torchaudio_placeholder(f"{type(exc).__name__}: {exc}")
        sys.modules.pop("torchaudio.functional", None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # dac's Snake uses torch.jit.script
        import dac
    return dac


# --- identity --------------------------------------------------------------------------------


def resolve_arch(arch: Any) -> dict[str, Any]:
    """``"dac16k"`` / ``"tiny"`` / dict → full ``dac.DAC`` keyword arguments."""
    if arch in (None, "dac16k"):
        return dict(DAC16K_ARCH)
    if arch == "tiny":
        return dict(TINY_ARCH)
    if isinstance(arch, dict):
        return {**DAC16K_ARCH, **arch}
    raise ValueError(f"codec.random_arch must be 'dac16k', 'tiny' or a mapping, got {arch!r}")


def identities_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two codec identities name the same weights (sha256) or the same random init."""
    if a.get("kind") != b.get("kind"):
        return False
    if a.get("kind") == "pretrained":
        return a.get("sha256") == b.get("sha256")
    return a.get("seed") == b.get("seed") and a.get("arch") == b.get("arch")


def describe_identity(identity: dict[str, Any]) -> str:
    """One line naming the codec, e.g. for logs and error messages."""
    if identity.get("kind") == "pretrained":
        return f"DAC weights {identity.get('file')} (sha256 {str(identity.get('sha256'))[:12]}…)"
    return f"random-init DAC (seed {identity.get('seed')}, arch {identity.get('arch_name')})"


# --- loading ---------------------------------------------------------------------------------


def default_weights_path() -> Path:
    """Where dac's downloader caches the 16 kHz weights."""
    return (
        Path.home() / ".cache" / "descript" / "dac"
        / f"weights_{MODEL_TYPE}_{MODEL_BITRATE}_{MODEL_TAG}.pth"
    )


def weights_url() -> str:
    """The download URL dac itself uses for the 16 kHz weights."""
    import_dac()
    from dac import utils as dac_utils

    return dac_utils.__MODEL_URLS__[(MODEL_TYPE, MODEL_TAG, MODEL_BITRATE)]


def download_failure(exc: BaseException) -> str:
    """Why the default weights are missing, for :func:`offline_message` (``exc``: the download
    error)."""
    return (f"not at {default_weights_path()} and could not be downloaded from {weights_url()} "
            f"({type(exc).__name__}: {exc})")


def offline_message(reason: str, make_target: str = "") -> str:
    """What to do when the DAC 16 kHz weights cannot be had (the one offline-weights message).

    ``reason`` says why (:func:`download_failure`, or a weights file that is missing);
    ``make_target`` names the make target the user ran (``"demo"`` → ``make demo
    CODEC=random``), empty for any target.
    """
    path = default_weights_path()
    make = f"make {make_target} " if make_target else "make: "
    return (
        f"DAC 16 kHz weights are not available: {reason}.\n"
        f"  - download {weights_url()} on a machine with internet and copy it to {path} "
        f"(dac downloads it there by itself when this machine is online), or\n"
        f"  - pass --codec-weights /path/to/weights_16khz.pth (DAC's release format; "
        f"{make}CODEC=/path/to/weights_16khz.pth), or\n"
        f"  - pass --codec random ({make}CODEC=random) for an offline pipeline check with a "
        f"random-init codec (audio quality is then meaningless)."
    )


def fetch_default_weights() -> Path:
    """Return dac's cached 16 kHz weights, downloading them through dac when missing."""
    path = default_weights_path()
    if path.is_file():
        return path
    import_dac()
    from dac import utils as dac_utils

    try:
        return Path(dac_utils.download(model_type=MODEL_TYPE, model_bitrate=MODEL_BITRATE,
                                       tag=MODEL_TAG))
    except Exception as exc:  # network errors come in many types (requests, ssl, socket)
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
        raise CodecWeightsError(offline_message(download_failure(exc))) from exc


def _read_release_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CodecWeightsError(
            f"{path}: cannot read DAC weights ({type(exc).__name__}: {exc}); expected DAC's "
            f"release format {{'state_dict', 'metadata': {{'kwargs'}}}}"
        ) from exc
    if not (isinstance(blob, dict) and "state_dict" in blob
            and "kwargs" in blob.get("metadata", {})):
        raise CodecWeightsError(
            f"{path}: not DAC's release format (need keys 'state_dict' and 'metadata.kwargs')"
        )
    return dict(blob["metadata"]["kwargs"]), blob["state_dict"]


def _build_dac(kwargs: dict[str, Any]) -> torch.nn.Module:
    dac = import_dac()
    import inspect
    import warnings

    accepted = set(inspect.signature(dac.DAC).parameters)
    with warnings.catch_warnings():  # dac builds its convs with the deprecated weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        return dac.DAC(**{k: v for k, v in kwargs.items() if k in accepted})


# --- inference speed-ups (same numbers, less work) -------------------------------------------
# Measured on the DAC-16k encoder, one CPU thread: Snake activations took 38 % of the time as
# five allocating passes (mul, sin, pow, mul, add); one allocation and in-place passes run the
# activation 2.8x faster with bit-identical output. Folding weight norm into plain weights once
# saves recomputing g * v / |v| for 84 convolutions on every forward.


def _snake_inplace(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``x + sin(alpha x)^2 / (alpha + 1e-9)`` for ``x: Tensor[B x C x T]``, ``alpha: [1 x C x 1]``.

    The expression of dac's ``snake`` evaluated with one temporary instead of four; bitwise
    equal to it. Only for inference (the in-place passes would break autograd).
    """
    y = torch.mul(x, alpha)
    return y.sin_().square_().mul_((alpha + SNAKE_EPS).reciprocal()).add_(x)


def _snake_forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled():  # dac's own expression, differentiable
        return x + (module.alpha + SNAKE_EPS).reciprocal() * torch.sin(module.alpha * x).pow(2)
    return _snake_inplace(x, module.alpha)


def is_snake(module: torch.nn.Module) -> bool:
    """Whether ``module`` is DAC's ``Snake1d`` activation (``alpha``: ``[1 x C x 1]``)."""
    alpha = getattr(module, "alpha", None)
    return (type(module).__name__ == "Snake1d" and isinstance(alpha, torch.Tensor)
            and alpha.dim() == 3)


def prepare_for_inference(model: torch.nn.Module) -> int:
    """Fold weight norm into plain weights and switch Snake activations to the in-place form.

    The model's outputs are unchanged to float rounding (tested); the state dict keeps no
    ``weight_g`` / ``weight_v`` afterwards, so load weights before calling this. Returns the
    number of folded convolutions.
    """
    folded = 0
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if type(hook).__name__ == "WeightNorm":
                torch.nn.utils.remove_weight_norm(module, hook.name)
                folded += 1
        if is_snake(module):
            module.forward = types.MethodType(_snake_forward, module)
    return folded


class Codec:
    """A frozen DAC model with tensor-level encode / quantize / decode.

    Attributes: ``identity`` (plain dict, recorded in manifests and checkpoints),
    ``sample_rate``, ``hop_length``, ``latent_dim``, ``n_codebooks``, ``device``, ``is_random``.
    """

    def __init__(self, model: torch.nn.Module, identity: dict[str, Any], cfg: CodecConfig):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        prepare_for_inference(model)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.identity = identity
        self.sample_rate = int(model.sample_rate)
        self.hop_length = int(model.hop_length)
        self.latent_dim = int(model.latent_dim)
        self.n_codebooks = int(model.n_codebooks)
        self.is_random = identity["kind"] == "random-init"

    # shapes / constants ---------------------------------------------------------------------
    def constants(self) -> dict[str, Any]:
        """The codec constants a cache manifest records (read back by trainer and infer)."""
        return {
            "identity": self.identity,
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "latent_dim": self.latent_dim,
            "n_codebooks": self.n_codebooks,
            "frame_rate": self.sample_rate / self.hop_length,
        }

    def frames_for(self, n_samples: int) -> int:
        """Latent frames produced for ``n_samples`` samples: ``ceil(n / hop)``."""
        return -(-int(n_samples) // self.hop_length)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return bf16_autocast(self.device, self.cfg.bf16, allow_cpu=True)

    def _as_wave(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(wave, dtype=torch.float32)
        if x.dim() == 1:
            x = x[None, None]
        elif x.dim() == 2:
            x = x[:, None]
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"wave must be [T], [B x T] or [B x 1 x T], got {tuple(x.shape)}")
        return x.to(self.device)

    # stages ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Pre-quantisation latents.

        wave: ``[T]``, ``[B x T]`` or ``[B x 1 x T]`` at ``sample_rate``; right-padded with zeros
        to a multiple of ``hop_length``. Returns float32 ``Tensor[B x D x ceil(T/hop)]`` on
        ``device``.
        """
        x = self._as_wave(wave)
        pad = (-x.shape[-1]) % self.hop_length
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        with self._autocast():
            z = self.model.encoder(x)
        return z.float()

    @torch.inference_mode()
    def encode_batched(self, waves: np.ndarray) -> np.ndarray:
        """Encode ``[N x T]`` float32 windows in batches of ``cfg.batch_size``.

        Returns float32 ``ndarray[N x D x F]`` on the host.
        """
        out = []
        for start in range(0, len(waves), max(1, self.cfg.batch_size)):
            chunk = waves[start:start + self.cfg.batch_size]
            out.append(self.encode(chunk).cpu().numpy())
        return np.concatenate(out, axis=0)

    @torch.inference_mode()
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Residual-VQ with all codebooks: ``Tensor[B x D x F]`` → quantised
        ``Tensor[B x D x F]``."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        with self._autocast():
            zq = self.model.quantizer(z, n_quantizers=self.n_codebooks)[0]
        return zq.float()

    @torch.inference_mode()
    def decode(self, zq: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Quantised latents ``Tensor[B x D x F]`` → wave ``Tensor[B x 1 x T]``.

        ``T = length`` when given (trimmed or zero-padded), else ``F * hop``.
        """
        zq = torch.as_tensor(zq, dtype=torch.float32, device=self.device)
        with self._autocast():
            y = self.model.decoder(zq)
        y = y.float()
        target = int(length) if length is not None else zq.shape[-1] * self.hop_length
        if y.shape[-1] < target:
            y = torch.nn.functional.pad(y, (0, target - y.shape[-1]))
        return y[..., :target]


def load_codec(cfg: CodecConfig | None = None) -> Codec:
    """Load the codec as ``cfg`` says (see module docstring for the rules)."""
    cfg = cfg or CodecConfig()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.weights == RANDOM:
        arch = resolve_arch(cfg.random_arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.random_seed))
            model = _build_dac(arch)
        arch_name = cfg.random_arch if isinstance(cfg.random_arch, str) else "custom"
        identity = {"kind": "random-init", "seed": int(cfg.random_seed), "arch": arch,
                    "arch_name": arch_name}
        log.warning(RANDOM_INIT_BANNER)
        print(f"*** {RANDOM_INIT_BANNER} ***", file=sys.stderr)
        return Codec(model, identity, cfg)

    path = Path(cfg.weights).expanduser() if cfg.weights else fetch_default_weights()
    if not path.is_file():
        raise CodecWeightsError(
            f"DAC weights file not found: {path} (given by --codec-weights / codec.weights)"
        )
    kwargs, state = _read_release_file(path)
    model = _build_dac(kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CodecWeightsError(
            f"{path}: weights do not fit the architecture in its metadata "
            f"(missing {list(missing)[:3]}…, unexpected {list(unexpected)[:3]}…)"
        )
    identity = {"kind": "pretrained", "file": path.name, "sha256": sha256_file(path),
                "kwargs": {k: v for k, v in kwargs.items() if isinstance(v, PLAIN_TYPES)}}
    return Codec(model, identity, cfg)


def save_random_release_file(path: str | Path, arch: Any = "tiny", seed: int = 0) -> Path:
    """Write a random-init DAC in DAC's release format with dac's own ``save`` (tests, demos)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_dac(resolve_arch(arch))
    model.save(str(path), package=False)
    return Path(path)


__all__ = [
    "Codec", "CodecConfig", "CodecWeightsError", "DAC16K_ARCH", "TINY_ARCH", "RANDOM",
    "RANDOM_INIT_BANNER", "load_codec", "import_dac", "identities_match", "describe_identity",
    "default_weights_path", "download_failure", "offline_message", "save_random_release_file",
    "sha256_file", "is_snake", "prepare_for_inference",
]

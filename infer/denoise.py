"""Checkpoint + codec → enhance one signal in bounded memory (the torch half of inference).

The enhancement path for one batch of 16 kHz waves is
``encode → denoiser → quantize (all codebooks) → decode`` (:class:`Enhancer`); ``--bypass``
drops the denoiser and runs the codec alone (the quality ceiling). Long signals are processed
in overlapping chunks (``infer.chunking`` has the geometry; :func:`chunk_spec` takes their
context from the enhancer's computed receptive field): :func:`enhance_signal` for a signal in
memory, ``infer.run`` for files.

With no checkpoint given, :func:`find_default_checkpoint` picks the newest ``best.pt`` under
``runs/`` trained on the loaded codec's latents. It reads each run's codec identity from the
small JSON files the trainer writes beside its checkpoints (:func:`identity_sidecars`), and
``torch.load``-s a checkpoint only for a run that has none of them.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleancodec.core.codec import (
    Codec,
    CodecConfig,
    describe_identity,
    identities_match,
    load_codec,
)
from cleancodec.core.config import require
from cleancodec.core.topology import bf16_autocast
from cleancodec.infer.arena import move_to_huge_pages
from cleancodec.infer.chunking import Chunk, ChunkAssembler, ChunkPlanner, ChunkSpec
from cleancodec.infer.receptive import ChainField, codec_chain_field
from cleancodec.trainer.checkpoint import BEST, RUN_CONFIG, CheckpointError, load_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_NAME = BEST
# JSON files beside a checkpoint that hold its "codec_identity", tried in this order: the
# checkpoint's own (``best.json`` for ``best.pt``) and the run's ``config.json``
IDENTITY_KEY = "codec_identity"
GPU_BATCH_SIZE = 16  # chunks per forward when batch_size is 0 ("auto") on a GPU
CPU_BATCH_SIZE = 1  # on CPU a bigger batch only costs memory


@dataclass
class DenoiseConfig:
    """The ``denoise`` section of a profile.

    checkpoint: trainer checkpoint (``runs/<name>/best.pt``); ``None`` → the newest
        ``best.pt`` under ``runs_dir`` trained on the loaded codec's latents.
    runs_dir: where the default checkpoint is looked for.
    chunk_frames: latent frames per chunk (50 frames = 1 s at 16 kHz / hop 320). The frames
        thrown away at each inner chunk edge are not a setting: they come from the computed
        receptive field of codec + denoiser (:func:`chunk_spec`).
    crossfade_frames: raised-cosine crossfade between neighbouring chunks.
    batch_size: chunks (per channel) per forward; 0 = auto (1 on CPU, 16 on GPU).
    mix: share of the dry input blended back into the output, 0 (none) … 1 (dry only).
    bypass: run the codec alone, without the denoiser.
    output_sr: output sample rate; ``None`` keeps each input's own rate.
    skip_existing: leave outputs that already exist untouched (reruns).
    allow_codec_mismatch: use a checkpoint trained on another codec's latents.
    read_block_seconds: seconds of input read per block (memory / speed trade-off).
    """

    checkpoint: str | None = None
    runs_dir: str = "runs"
    chunk_frames: int = 500
    crossfade_frames: int = 4
    batch_size: int = 0
    mix: float = 0.0
    bypass: bool = False
    output_sr: int | None = None
    skip_existing: bool = False
    allow_codec_mismatch: bool = False
    read_block_seconds: float = 5.0

    def __post_init__(self) -> None:
        require(0.0 <= float(self.mix) <= 1.0, "denoise.mix",
                f"must be within 0..1, got {self.mix}")
        require(self.crossfade_frames >= 0, "denoise.crossfade_frames",
                f"must be ≥ 0, got {self.crossfade_frames}")
        require(self.chunk_frames > self.crossfade_frames, "denoise.chunk_frames",
                f"({self.chunk_frames}) must exceed crossfade_frames ({self.crossfade_frames}) "
                "and the context the receptive field needs at each inner chunk edge")
        require(self.batch_size >= 0, "denoise.batch_size",
                f"must be ≥ 0 (0 = auto), got {self.batch_size}")
        require(self.output_sr is None or int(self.output_sr) > 0, "denoise.output_sr",
                f"must be positive, got {self.output_sr}")
        require(self.read_block_seconds > 0, "denoise.read_block_seconds",
                f"must be positive, got {self.read_block_seconds}")


# --- the model path ---------------------------------------------------------------------------


class Enhancer:
    """Codec (+ denoiser) applied to batches of 16 kHz waves.

    ``denoiser`` maps raw latents ``Tensor[B x D x F]`` to ``Tensor[B x D x F]``; ``None`` runs
    the codec alone (bypass). ``info`` is the checkpoint's info dict (empty for bypass). The
    codec's and the denoiser's weights on the CPU move onto huge pages (:mod:`infer.arena`;
    same tensors and values).
    """

    def __init__(self, codec: Codec, denoiser: torch.nn.Module | None,
                 info: dict[str, Any] | None = None, checkpoint: str | None = None):
        self.codec = codec
        self.denoiser = denoiser.to(codec.device).eval() if denoiser is not None else None
        # before any forward can read them (a move under a running forward would free its
        # weights): weights already moved, e.g. a codec shared by enhancers, stay where they are;
        # one block per module, so that saving one module's weights writes only its own
        for module in (codec.model, self.denoiser):
            if module is not None:
                move_to_huge_pages(module)
        self.info = info or {}
        self.checkpoint = checkpoint

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def hop(self) -> int:
        return self.codec.hop_length

    @property
    def bypass(self) -> bool:
        return self.denoiser is None

    @functools.cached_property
    def chain_field(self) -> ChainField:
        """Receptive field of this codec + denoiser, computed from the modules (an engine
        without torch modules sets this attribute itself)."""
        return codec_chain_field(self.codec, self.denoiser)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return bf16_autocast(self.codec.device, self.codec.cfg.bf16, allow_cpu=True)

    @torch.inference_mode()
    def __call__(self, waves: np.ndarray) -> np.ndarray:
        """Enhance a batch: float32 ``[B x T]`` at 16 kHz → float32 ``[B x T]``."""
        length = waves.shape[-1]
        z = self.codec.encode(waves)
        if self.denoiser is not None:
            with self._autocast():
                z = self.denoiser(z).float()
        zq = self.codec.quantize(z)
        y = self.codec.decode(zq, length=length)
        return y[:, 0].cpu().numpy().astype(np.float32, copy=False)

    def auto_batch_size(self, requested: int) -> int:
        """``requested`` chunks per forward, or the device's default when it is 0."""
        if requested > 0:
            return requested
        return GPU_BATCH_SIZE if self.codec.device.type == "cuda" else CPU_BATCH_SIZE

    def describe(self) -> dict[str, Any]:
        """Provenance of this enhancer (for the run report)."""
        return {
            "checkpoint": self.checkpoint,
            "step": self.info.get("step"),
            "ema": bool(self.info.get("ema")),
            "bypass": self.bypass,
            "codec": self.codec.identity,
            "codec_random_init": self.codec.is_random,
            "chunk_context_frames": self.chain_field.edge_frames(),
        }


def identity_sidecars(checkpoint: Path) -> list[Path]:
    """JSON files that may record ``checkpoint``'s codec identity, in the order they are read:
    ``<stem>.json`` beside it (written with the checkpoint) and the run's ``config.json``."""
    return [checkpoint.with_suffix(".json"), checkpoint.parent / RUN_CONFIG]


def trained_codec_identity(checkpoint: Path) -> dict[str, Any] | None:
    """The codec identity ``checkpoint`` was trained on, or None when it cannot be read.

    Read from a sidecar (:func:`identity_sidecars`) when one names it; only otherwise is the
    checkpoint itself loaded (``torch.load``, slow for big runs).
    """
    for sidecar in identity_sidecars(checkpoint):
        try:
            identity = json.loads(sidecar.read_text()).get(IDENTITY_KEY)
        except (OSError, ValueError, AttributeError):  # missing, torn or not a JSON object
            continue
        if isinstance(identity, dict):
            return identity
    try:
        return load_checkpoint(checkpoint).get(IDENTITY_KEY) or {}
    except CheckpointError:
        return None


def find_default_checkpoint(runs_dir: str | Path,
                            codec_identity: dict[str, Any] | None = None) -> Path:
    """The most recently written ``best.pt`` under ``runs_dir`` (recursively).

    With ``codec_identity``, the newest one trained on that codec's latents; when none was,
    the newest of all (loading it then explains the mismatch).
    """
    runs = Path(runs_dir)
    found = sorted(runs.rglob(CHECKPOINT_NAME), key=lambda p: p.stat().st_mtime,
                   reverse=True) if runs.is_dir() else []
    if not found:
        raise CheckpointError(
            f"no {CHECKPOINT_NAME} under {runs}/: train one first (`make train`), or pass "
            f"--checkpoint PATH (make: CHECKPOINT=PATH), or --bypass to run the codec alone")
    if codec_identity is not None:
        for path in found:
            trained = trained_codec_identity(path)
            if trained is not None and identities_match(trained, codec_identity):
                return path
    return found[0]


def check_codec_identity(info: dict[str, Any], codec: Codec, checkpoint: str | Path,
                         allow_mismatch: bool) -> None:
    """Refuse a checkpoint trained on another codec's latents unless ``allow_mismatch``.

    A seed checkpoint taken directly (``info["origin"]``, no identity recorded) is accepted with
    a warning: it names no codec (the seed trained on DAC 16 kHz's pretrained weights)."""
    trained = info.get("codec_identity") or {}
    if not trained and info.get("origin"):
        log.warning("%s: a seed checkpoint records no codec; assuming it was trained on "
                    "latents of %s (cleancodec import-seed records one)", checkpoint,
                    describe_identity(codec.identity))
        return
    if identities_match(trained, codec.identity):
        return
    message = (f"{checkpoint}: trained on latents of {describe_identity(trained)}, but the "
               f"loaded codec is {describe_identity(codec.identity)}")
    if not allow_mismatch:
        raise CheckpointError(
            message + "; load the same codec (--conf / --codec, as for `cleancodec cache`) or "
            "pass --allow-codec-mismatch")
    log.warning("%s (--allow-codec-mismatch given)", message)


def load_enhancer(cfg: DenoiseConfig, codec_cfg: CodecConfig,
                  codec: Codec | None = None) -> Enhancer:
    """Load the codec (unless given) and, unless ``cfg.bypass``, the trainer checkpoint.

    Raises CheckpointError for a missing checkpoint or a codec identity / latent size mismatch.
    """
    codec = codec or load_codec(codec_cfg)
    if cfg.bypass:
        return Enhancer(codec, None)
    from cleancodec.trainer.checkpoint import load_denoiser

    path = Path(cfg.checkpoint) if cfg.checkpoint \
        else find_default_checkpoint(cfg.runs_dir, codec.identity)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        denoiser, info = load_denoiser(path, map_location="cpu")
    except Exception as exc:  # torch / pickle / key errors: report them as one kind
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") \
            from exc
    check_codec_identity(info, codec, path, cfg.allow_codec_mismatch)
    _check_latent_dim(denoiser, codec, path)
    log.info("denoiser %s (step %s) on %s", path, info.get("step"),
             describe_identity(codec.identity))
    return Enhancer(codec, denoiser, info, str(path))


def _check_latent_dim(denoiser: torch.nn.Module, codec: Codec, path: Path) -> None:
    """Run one frame through the denoiser to catch a latent-size mismatch with a clear error."""
    probe = torch.zeros(1, codec.latent_dim, 1, device=codec.device)
    try:
        with torch.inference_mode():
            denoiser.to(codec.device).eval()(probe)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the denoiser does not accept {codec.latent_dim}-channel latents of "
            f"{describe_identity(codec.identity)} ({exc})") from exc


# --- whole signals in memory ------------------------------------------------------------------


def _batched(items: list[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(items), batch_size):
        yield np.stack(items[i:i + batch_size])


def enhance_chunks(enhancer: Enhancer, chunks: list[Chunk], batch_size: int) -> list[np.ndarray]:
    """Enhance chunks (each ``[C x L]``, equal L) with ``batch_size`` rows per forward.

    Every channel of every chunk is one row; returns one ``[C x L]`` output per chunk.
    """
    rows = [ch for chunk in chunks for ch in chunk.samples]
    out_rows = [y for batch in _batched(rows, batch_size) for y in enhancer(batch)]
    out, i = [], 0
    for chunk in chunks:
        c = chunk.samples.shape[0]
        out.append(np.stack(out_rows[i:i + c]))
        i += c
    return out


def chunk_spec(cfg: DenoiseConfig, enhancer: Enhancer) -> ChunkSpec:
    """The chunk geometry of ``cfg`` for ``enhancer``: ``cfg.chunk_frames`` and
    ``cfg.crossfade_frames``, with the context at each inner edge taken from the enhancer's
    receptive field (``ChainField.edge_frames``), so chunked output equals whole-signal output.

    Raises ValueError when ``cfg.chunk_frames`` is too short for that context.
    """
    return ChunkSpec.from_config(cfg, enhancer.chain_field)


def enhance_signal(enhancer: Enhancer, wave: np.ndarray, spec: ChunkSpec,
                   batch_size: int = 1) -> np.ndarray:
    """Chunked enhancement of a whole 16 kHz signal held in memory.

    wave: float32 ``[T]`` or ``[C x T]``; spec: the geometry (:func:`chunk_spec` derives it
    from a config and the enhancer's receptive field). Returns the same shape. Used for short
    signals, tests and benchmarks; files are streamed by ``infer.run`` with the same planner
    and assembler.
    """
    x = wave[None] if wave.ndim == 1 else wave
    planner = ChunkPlanner(spec, x.shape[0], enhancer.hop)
    assembler = ChunkAssembler(spec)
    chunks = planner.push(x) + planner.finish()
    pieces = []
    # chunk outputs must reach the assembler in order; lengths differ only for a lone chunk
    for i in range(0, len(chunks), max(1, batch_size)):
        group = chunks[i:i + max(1, batch_size)]
        for chunk, y in zip(group, enhance_chunks(enhancer, group, batch_size)):
            pieces.append(assembler.add(chunk.start, y))
    pieces.append(assembler.finish(planner.total or 0))
    y = np.concatenate(pieces, axis=1) if pieces else np.zeros_like(x)
    return y[0] if wave.ndim == 1 else y


def enhance_whole(enhancer: Enhancer, wave: np.ndarray) -> np.ndarray:
    """Reference: the whole 16 kHz signal in one forward (memory grows with its length).

    wave: float32 ``[T]`` or ``[C x T]``; returns the same shape.
    """
    x = wave[None] if wave.ndim == 1 else wave
    y = enhancer(np.ascontiguousarray(x, dtype=np.float32))
    return y[0] if wave.ndim == 1 else y


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(|ref|² / |ref - est|²)`` in dB (inf when identical)."""
    ref = np.asarray(reference, np.float64)
    err = ref - np.asarray(estimate, np.float64)
    noise = float(np.sum(err ** 2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(float(np.sum(ref ** 2)), 1e-30) / noise))


__all__ = [
    "CheckpointError", "DenoiseConfig", "Enhancer", "check_codec_identity", "chunk_spec",
    "enhance_chunks", "enhance_signal", "enhance_whole", "find_default_checkpoint",
    "identity_sidecars", "load_enhancer", "snr_db", "trained_codec_identity",
]

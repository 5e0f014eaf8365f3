"""Checkpoint + codec → enhance one signal in bounded memory.

The enhancement path for one batch of 16 kHz waves is
``encode → denoiser → quantize (all codebooks) → decode`` (:class:`Enhancer`); ``--bypass``
drops the denoiser and runs the codec alone (the quality ceiling).

Long signals are cut into chunks of ``chunk_frames`` latent frames (a multiple of the hop, so
every chunk's latent frames line up with the whole signal's). Consecutive chunks overlap by
``2 * context_frames + crossfade_frames``: ``context_frames`` at each inner edge are thrown away
(they see zero padding instead of the real neighbours) and the outputs meet with a raised-cosine
crossfade of ``crossfade_frames`` in the middle of the overlap. The last chunk is aligned to end
exactly where the whole signal ends (the signal zero-padded to a multiple of the hop), so every
chunk has the same length and batches together; a signal no longer than one chunk is processed
whole. With ``context_frames`` at least the receptive field of encoder + denoiser + decoder,
chunked output equals whole-signal output up to float rounding (BENCHMARKS.md has the figures).

:class:`ChunkPlanner` (blocks in → chunks out) and :class:`ChunkAssembler` (chunk outputs in →
contiguous samples out) are streaming: neither ever holds more than about two chunks, so memory
does not grow with the signal's length. :func:`enhance_signal` wires them for an in-memory
signal; ``infer.run`` wires them to files.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleancodec.pipeline.codec import Codec, CodecConfig, describe_identity, identities_match, load_codec

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "best.pt"
GPU_BATCH_SIZE = 16  # chunks per forward when batch_size is 0 ("auto") on a GPU
CPU_BATCH_SIZE = 1  # on CPU a bigger batch only costs memory


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the loaded codec."""


@dataclass
class DenoiseConfig:
    """The ``denoise`` section of a profile.

    checkpoint: trainer checkpoint (``runs/<name>/best.pt``); ``None`` → the newest
        ``best.pt`` under ``runs_dir`` trained on the loaded codec's latents.
    runs_dir: where the default checkpoint is looked for.
    chunk_frames: latent frames per chunk (50 frames = 1 s at 16 kHz / hop 320).
    context_frames: frames thrown away at each inner chunk edge (≥ receptive field).
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
    context_frames: int = 48
    crossfade_frames: int = 4
    batch_size: int = 0
    mix: float = 0.0
    bypass: bool = False
    output_sr: int | None = None
    skip_existing: bool = False
    allow_codec_mismatch: bool = False
    read_block_seconds: float = 5.0

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work."""
        if not 0.0 <= float(self.mix) <= 1.0:
            raise ValueError(f"denoise.mix must be within 0..1, got {self.mix}")
        if self.context_frames < 0 or self.crossfade_frames < 0:
            raise ValueError("denoise.context_frames and crossfade_frames must be ≥ 0")
        stride = self.chunk_frames - 2 * self.context_frames - self.crossfade_frames
        if stride <= 0:
            raise ValueError(
                f"denoise.chunk_frames ({self.chunk_frames}) must exceed 2 * context_frames + "
                f"crossfade_frames ({2 * self.context_frames + self.crossfade_frames})")
        if self.batch_size < 0:
            raise ValueError("denoise.batch_size must be ≥ 0 (0 = auto)")
        if self.output_sr is not None and int(self.output_sr) <= 0:
            raise ValueError(f"denoise.output_sr must be positive, got {self.output_sr}")
        if self.read_block_seconds <= 0:
            raise ValueError("denoise.read_block_seconds must be positive")


# --- chunk geometry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkSpec:
    """Chunk geometry in samples (all multiples of the hop).

    length: samples per chunk; context: samples dropped at each inner edge; crossfade: samples
    of crossfade; stride = length - 2 * context - crossfade.
    """

    length: int
    context: int
    crossfade: int

    @property
    def stride(self) -> int:
        return self.length - 2 * self.context - self.crossfade

    @classmethod
    def from_frames(cls, chunk_frames: int, context_frames: int, crossfade_frames: int,
                    hop: int) -> ChunkSpec:
        spec = cls(chunk_frames * hop, context_frames * hop, crossfade_frames * hop)
        if spec.stride <= 0:
            raise ValueError(f"chunk of {chunk_frames} frames leaves no room after "
                             f"2 x {context_frames} context + {crossfade_frames} crossfade frames")
        return spec

    @classmethod
    def from_config(cls, cfg: DenoiseConfig, hop: int) -> ChunkSpec:
        return cls.from_frames(cfg.chunk_frames, cfg.context_frames, cfg.crossfade_frames, hop)


@dataclass
class Chunk:
    """One chunk of a signal: ``samples`` is float32 ``[C x length]`` starting at ``start``.

    Samples past the signal's end are zeros (the same padding whole-signal processing sees).
    """

    start: int
    samples: np.ndarray


class ChunkPlanner:
    """Cut a stream of ``[C x n]`` blocks into overlapping chunks (see module docstring).

    ``push(block)`` returns the chunks that became complete; ``finish()`` returns the last one
    (aligned to the padded end) and records the signal's length in :attr:`total`.
    """

    def __init__(self, spec: ChunkSpec, channels: int, hop: int):
        self.spec, self.channels, self.hop = spec, channels, hop
        self._buf = np.zeros((channels, 0), np.float32)
        self._buf_start = 0  # signal position of _buf[:, 0]
        self._next = 0  # start of the next regular chunk
        self._last_end = 0  # end of the last chunk emitted
        self._emitted = 0
        self.total: int | None = None

    @property
    def _buf_end(self) -> int:
        return self._buf_start + self._buf.shape[1]

    def _take(self, start: int, length: int) -> np.ndarray:
        lo = start - self._buf_start
        piece = self._buf[:, lo:lo + length]
        if piece.shape[1] < length:
            piece = np.pad(piece, ((0, 0), (0, length - piece.shape[1])))
        return np.ascontiguousarray(piece)

    def push(self, block: np.ndarray) -> list[Chunk]:
        """Append ``[C x n]`` samples; return the chunks now complete."""
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels} x n] block, got {block.shape}")
        self._buf = np.concatenate([self._buf, block.astype(np.float32, copy=False)], axis=1)
        out = []
        while self._buf_end >= self._next + self.spec.length:
            out.append(Chunk(self._next, self._take(self._next, self.spec.length)))
            self._last_end = self._next + self.spec.length
            self._emitted += 1
            # keep from this chunk's start: the final chunk may begin anywhere after it
            drop = self._next - self._buf_start
            self._buf = self._buf[:, drop:]
            self._buf_start = self._next
            self._next += self.spec.stride
        return out

    def finish(self) -> list[Chunk]:
        """End of signal: return the final chunk (if any samples are left uncovered)."""
        total = self._buf_end
        self.total = total
        padded = -(-total // self.hop) * self.hop
        if total == 0:
            return []
        if self._emitted == 0:
            return [Chunk(0, self._take(0, padded))]
        if self._last_end >= total:
            return []
        start = padded - self.spec.length
        return [Chunk(start, self._take(start, self.spec.length))]


def _fades(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raised-cosine fade-in and fade-out of ``n`` samples that sum to one."""
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    fade_in = np.sin(0.5 * np.pi * t) ** 2
    return fade_in.astype(np.float32), (1.0 - fade_in).astype(np.float32)


class ChunkAssembler:
    """Join processed chunks (in order) into contiguous output.

    ``add(chunk_start, y [C x L])`` returns the samples that became final; ``finish(total)``
    returns the rest, up to ``total`` samples overall.
    """

    def __init__(self, spec: ChunkSpec):
        self.spec = spec
        self._fade_in, self._fade_out = _fades(spec.crossfade)
        self._pending: tuple[int, np.ndarray] | None = None
        self.emitted = 0  # samples returned so far

    def add(self, start: int, y: np.ndarray) -> np.ndarray:
        if self._pending is None:
            self._pending = (start, y)
            return y[:, :0]
        p_start, p_y = self._pending
        p_end = p_start + p_y.shape[1]
        if not p_start < start <= p_end:
            raise ValueError(f"chunk at {start} does not overlap the previous one "
                             f"[{p_start}, {p_end})")
        mid = (start + p_end) // 2
        half = self.spec.crossfade // 2
        a = max(start, mid - half, self.emitted)
        b = min(p_end, a + self.spec.crossfade)
        fade_in, fade_out = (self._fade_in, self._fade_out) if b - a == self.spec.crossfade \
            else _fades(b - a)
        head = p_y[:, self.emitted - p_start:a - p_start]
        blend = p_y[:, a - p_start:b - p_start] * fade_out + y[:, a - start:b - start] * fade_in
        self._pending = (start, y)
        self.emitted = b
        return np.concatenate([head, blend.astype(np.float32)], axis=1)

    def finish(self, total: int) -> np.ndarray:
        if self._pending is None:
            return np.zeros((0, 0), np.float32)
        p_start, p_y = self._pending
        tail = p_y[:, self.emitted - p_start:total - p_start]
        self.emitted += tail.shape[1]
        self._pending = None
        return tail


# --- the model path ---------------------------------------------------------------------------


class Enhancer:
    """Codec (+ denoiser) applied to batches of 16 kHz waves.

    ``denoiser`` maps raw latents ``Tensor[B x D x F]`` to ``Tensor[B x D x F]``; ``None`` runs
    the codec alone (bypass). ``info`` is the checkpoint's info dict (empty for bypass).
    """

    def __init__(self, codec: Codec, denoiser: torch.nn.Module | None,
                 info: dict[str, Any] | None = None, checkpoint: str | None = None):
        self.codec = codec
        self.denoiser = denoiser.to(codec.device).eval() if denoiser is not None else None
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

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.codec.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.codec.device.type, dtype=torch.bfloat16)

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
            "bypass": self.bypass,
            "codec": self.codec.identity,
            "codec_random_init": self.codec.is_random,
        }


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
        from cleancodec.trainer.checkpoint import CheckpointError as TrainerCheckpointError
        from cleancodec.trainer.checkpoint import load_checkpoint

        for path in found:
            try:
                trained = load_checkpoint(path).get("codec_identity") or {}
            except TrainerCheckpointError:
                continue
            if identities_match(trained, codec_identity):
                return path
    return found[0]


def check_codec_identity(info: dict[str, Any], codec: Codec, checkpoint: str | Path,
                         allow_mismatch: bool) -> None:
    """Refuse a checkpoint trained on another codec's latents unless ``allow_mismatch``."""
    trained = info.get("codec_identity") or {}
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


def enhance_signal(enhancer: Enhancer, wave: np.ndarray, spec: ChunkSpec,
                   batch_size: int = 1) -> np.ndarray:
    """Chunked enhancement of a whole 16 kHz signal held in memory.

    wave: float32 ``[T]`` or ``[C x T]``. Returns the same shape. Used for short signals,
    tests and benchmarks; files are streamed by ``infer.run`` with the same planner/assembler.
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
    "CheckpointError", "Chunk", "ChunkAssembler", "ChunkPlanner", "ChunkSpec", "DenoiseConfig",
    "Enhancer", "check_codec_identity", "enhance_chunks", "enhance_signal", "enhance_whole",
    "find_default_checkpoint", "load_enhancer", "snr_db",
]

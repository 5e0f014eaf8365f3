"""Chunk geometry: cut a long signal into overlapping chunks and join their outputs (no torch).

Long signals are cut into chunks of ``chunk_frames`` latent frames (a multiple of the hop, so
every chunk's latent frames line up with the whole signal's). Consecutive chunks overlap by
``2 * context + crossfade_frames`` frames: ``context`` frames at each inner edge are thrown away
(they see zero padding instead of the real neighbours) and the outputs meet with a raised-cosine
crossfade of ``crossfade_frames`` in the middle of the overlap. The last chunk is aligned to end
exactly where the whole signal ends (the signal zero-padded to a multiple of the hop), so every
chunk has the same length and batches together; a signal no longer than one chunk is processed
whole.

The context is not a setting: :meth:`ChunkSpec.from_config` takes it from the receptive field
of encoder + denoiser + decoder computed from the architectures (``infer.receptive``, the same
field ``infer.stream`` uses), rounded up to whole frames on the longer of its two sides
(:meth:`~cleancodec.infer.receptive.ChainField.edge_frames`). Every output sample that is kept
then sees all the input that can change it, so chunked output equals whole-signal output up to
float rounding (for a denoiser with ``grn: global``, whose statistics span the whole sequence,
only approximately). DAC 16 kHz with the default denoiser: 30 frames (600 ms) each side.

:class:`ChunkPlanner` (blocks in → chunks out) and :class:`ChunkAssembler` (chunk outputs in →
contiguous samples out) are streaming: neither ever holds more than about two chunks, so memory
does not grow with the signal's length. ``infer.denoise.enhance_signal`` wires them for an
in-memory signal; ``infer.run`` wires them to files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class ChunkFrames(Protocol):
    """A config naming the chunk geometry in latent frames (``DenoiseConfig`` is one)."""

    chunk_frames: int
    crossfade_frames: int


class EdgeField(Protocol):
    """A receptive field telling how many frames a chunk drops at each inner edge
    (``infer.receptive.ChainField`` is one)."""

    hop: int

    def edge_frames(self) -> int: ...


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
        """Samples between the starts of consecutive chunks."""
        return self.length - 2 * self.context - self.crossfade

    @classmethod
    def from_frames(cls, chunk_frames: int, context_frames: int, crossfade_frames: int,
                    hop: int) -> ChunkSpec:
        """Geometry from latent-frame counts and the codec's ``hop`` (samples per frame)."""
        spec = cls(chunk_frames * hop, context_frames * hop, crossfade_frames * hop)
        if spec.stride <= 0:
            raise ValueError(f"chunk of {chunk_frames} frames leaves no room after "
                             f"2 x {context_frames} context + {crossfade_frames} crossfade frames")
        return spec

    @classmethod
    def from_config(cls, cfg: ChunkFrames, field: EdgeField) -> ChunkSpec:
        """The geometry of a config holding ``chunk_frames`` and ``crossfade_frames`` (a
        ``DenoiseConfig``), with the context taken from the receptive ``field`` of the chain
        that processes the chunks (see module docstring).

        Raises ValueError when ``chunk_frames`` leaves no room after the context and the
        crossfade, naming the smallest chunk that works.
        """
        context = int(field.edge_frames())
        smallest = 2 * context + int(cfg.crossfade_frames) + 1
        if int(cfg.chunk_frames) < smallest:
            raise ValueError(
                f"denoise.chunk_frames ({cfg.chunk_frames}) must be at least {smallest}: "
                f"chunks drop {context} frames of context at each inner edge (the receptive "
                f"field of codec + denoiser) and overlap by {cfg.crossfade_frames} crossfade "
                f"frames")
        return cls.from_frames(cfg.chunk_frames, context, cfg.crossfade_frames, field.hop)


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
        """Output ``y`` ``[C x L]`` of the chunk at ``start`` → ``[C x n]`` samples now final."""
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
        """The remaining ``[C x n]`` samples, up to ``total`` samples emitted overall."""
        if self._pending is None:
            return np.zeros((0, 0), np.float32)
        p_start, p_y = self._pending
        tail = p_y[:, self.emitted - p_start:total - p_start]
        self.emitted += tail.shape[1]
        self._pending = None
        return tail


__all__ = ["Chunk", "ChunkAssembler", "ChunkFrames", "ChunkPlanner", "ChunkSpec", "EdgeField"]

"""Streaming denoise: push blocks of 16 kHz samples in, get enhanced samples out, fixed latency.

The chain (DAC encoder → denoiser → quantizer → decoder) has a finite receptive field
(``infer.receptive``): a hop-aligned block of output depends on ``context`` samples before it
and ``lookahead`` samples after it, and on nothing else. So every block of ``block`` samples
is enhanced by running the whole chain on the window ::

    [start − context, start + block + lookahead)      (all multiples of the hop, 320 samples)

and keeping the block's part of the output. The window's latent frames line up with the whole
signal's, and every sample that can change the block is in it, so the streamed output equals
whole-signal processing (``infer.denoise.enhance_whole``) to float rounding. At the start of
the stream the window begins at sample 0 (the signal's own edge, like whole-signal
processing); :meth:`StreamDenoiser.flush` ends the last windows at the signal's end padded to
the hop, again like whole-signal processing.

Latency: a block is emitted once ``lookahead`` samples past its end have arrived, so the first
sample of every block leaves ``block + lookahead`` samples after it came in
(:attr:`StreamGeometry.latency_ms`; compute time comes on top). Each window costs a forward
over ``context + block + lookahead`` samples: small blocks lower the latency and raise the
compute per second of audio (``bench/stream.py`` measures it).

Engines: anything that maps float32 ``[B x T] → [B x T]`` at 16 kHz with ``sample_rate`` and
``hop`` attributes: the torch :class:`~cleancodec.infer.denoise.Enhancer`, or an exported full
graph run by onnxruntime (``infer.onnx_engine.OnnxEnhancer``, which carries its receptive field
in its metadata).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cleancodec.infer.fileio import Fifo
from cleancodec.infer.receptive import SECONDS_PER_MS, ChainField, codec_chain_field

DEFAULT_BLOCK_MS = 200.0  # 10 frames of 20 ms


class StreamError(ValueError):
    """A streaming setting or input that cannot work (the message says why)."""


class Engine(Protocol):
    """What a stream runs: float32 ``[B x T]`` 16 kHz waves → enhanced ``[B x T]``."""

    sample_rate: int
    hop: int

    def __call__(self, waves: np.ndarray) -> np.ndarray: ...


def engine_field(engine: Engine) -> ChainField:
    """The receptive field of an engine: computed from the torch modules of an ``Enhancer``,
    read from ``engine.chain_field`` otherwise (the ONNX engine's metadata)."""
    field = getattr(engine, "chain_field", None)
    if isinstance(field, ChainField):
        return field
    codec = getattr(engine, "codec", None)
    if codec is None or not hasattr(codec, "model"):
        raise StreamError(f"{type(engine).__name__}: cannot tell its receptive field (needs a "
                          "torch codec or a chain_field attribute)")
    return codec_chain_field(codec, getattr(engine, "denoiser", None))


def block_frames_for(block_ms: float, sample_rate: int, hop: int) -> int:
    """Latent frames in a block of ``block_ms`` milliseconds; it must be a whole number ≥ 1."""
    frame_ms = hop / sample_rate / SECONDS_PER_MS
    frames = block_ms / frame_ms
    if frames < 1 or abs(frames - round(frames)) > 1e-6:
        raise StreamError(
            f"block of {block_ms:g} ms is not a positive multiple of the codec hop ({hop} "
            f"samples = {frame_ms:g} ms at {sample_rate} Hz): use {frame_ms:g}, "
            f"{2 * frame_ms:g}, {3 * frame_ms:g} … ms")
    return int(round(frames))


@dataclass(frozen=True)
class StreamGeometry:
    """Window geometry in samples at the engine's rate (every figure a multiple of ``hop``).

    block: samples emitted per window; context / lookahead: samples of input before / after
    the block that each window holds (the chain's receptive field rounded up to frames).
    """

    sample_rate: int
    hop: int
    block: int
    context: int
    lookahead: int

    @classmethod
    def for_field(cls, field: ChainField, block_frames: int) -> StreamGeometry:
        """The geometry for ``field`` and blocks of ``block_frames`` frames."""
        if int(block_frames) < 1:
            raise StreamError(f"a block must hold at least one frame, got {block_frames}")
        hop = field.hop
        return cls(field.sample_rate, hop, int(block_frames) * hop,
                   field.context_frames() * hop, field.lookahead_frames() * hop)

    @property
    def window(self) -> int:
        """Samples in one steady-state window (``context + block + lookahead``)."""
        return self.context + self.block + self.lookahead

    @property
    def latency(self) -> int:
        """Samples between a block's first input sample and its output: ``block +
        lookahead``."""
        return self.block + self.lookahead

    def ms(self, samples: int) -> float:
        """``samples`` in milliseconds."""
        return samples / self.sample_rate / SECONDS_PER_MS

    @property
    def latency_ms(self) -> float:
        return self.ms(self.latency)

    @property
    def block_ms(self) -> float:
        return self.ms(self.block)

    def describe(self) -> str:
        """One line: block, lookahead, latency and window in ms."""
        return (f"block {self.block_ms:.0f} ms + lookahead {self.ms(self.lookahead):.0f} ms = "
                f"latency {self.latency_ms:.0f} ms; each block runs the chain on "
                f"{self.ms(self.window):.0f} ms ({self.ms(self.context):.0f} ms of past context)")


class StreamDenoiser:
    """Enhance a stream block by block (see module docstring).

    ``push(x)`` takes float32 samples at the engine's rate, ``[n]`` (mono) or ``[C x n]``, and
    returns the enhanced samples that became final, in the same layout. By default the output
    is *aligned*: output sample i is input sample i enhanced, returned up to
    ``geometry.latency`` samples after it was pushed. With ``fixed_delay=True`` every push
    returns exactly as many samples as it took: the aligned output delayed by
    ``geometry.latency`` samples (zeros first), as an audio callback needs. ``flush()`` ends
    the stream and returns the rest (aligned: total output length = total input length;
    fixed delay: the last ``latency`` samples). ``reset()`` starts a new stream.
    """

    def __init__(self, engine: Engine, geometry: StreamGeometry, channels: int = 1,
                 fixed_delay: bool = False):
        if geometry.hop != engine.hop or geometry.sample_rate != engine.sample_rate:
            raise StreamError(f"geometry for hop {geometry.hop} at {geometry.sample_rate} Hz "
                              f"does not fit the engine (hop {engine.hop} at "
                              f"{engine.sample_rate} Hz)")
        if channels < 1:
            raise StreamError(f"channels must be ≥ 1, got {channels}")
        self.engine, self.geometry = engine, geometry
        self.channels, self.fixed_delay = int(channels), bool(fixed_delay)
        self.reset()

    @classmethod
    def for_engine(cls, engine: Engine, block_frames: int | None = None,
                   block_ms: float | None = None, channels: int = 1,
                   fixed_delay: bool = False) -> StreamDenoiser:
        """A stream over ``engine`` with blocks of ``block_frames`` frames or ``block_ms``
        milliseconds (default :data:`DEFAULT_BLOCK_MS`)."""
        if block_frames is None:
            block_frames = block_frames_for(DEFAULT_BLOCK_MS if block_ms is None else block_ms,
                                            engine.sample_rate, engine.hop)
        geometry = StreamGeometry.for_field(engine_field(engine), block_frames)
        return cls(engine, geometry, channels, fixed_delay)

    # --- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        self._buf = np.zeros((self.channels, 0), np.float32)
        self._buf_start = 0  # stream position of _buf[:, 0]
        self._next = 0  # start of the next block to emit
        self.pushed = 0  # input samples so far
        self.emitted = 0  # enhanced (aligned) samples returned so far
        self._closed = False
        self._delay = Fifo(self.channels) if self.fixed_delay else None
        if self._delay is not None:
            self._delay.put(np.zeros((self.channels, self.geometry.latency), np.float32))

    @property
    def latency(self) -> int:
        """``block + lookahead`` samples (see :class:`StreamGeometry`)."""
        return self.geometry.latency

    @property
    def latency_ms(self) -> float:
        return self.geometry.latency_ms

    @property
    def sample_rate(self) -> int:
        return self.geometry.sample_rate

    def describe(self) -> str:
        """One line: block, lookahead, latency and the work per block."""
        return self.geometry.describe()

    # --- input --------------------------------------------------------------------------------
    def _as_block(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1 and self.channels == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise StreamError(f"expected samples as [n] (mono) or [{self.channels} x n], got "
                              f"shape {tuple(np.shape(samples))}")
        if not np.all(np.isfinite(x)):
            raise StreamError("input samples hold NaN or inf")
        return x

    def _take(self, start: int, end: int) -> np.ndarray:
        """Input ``[start, end)`` as ``[C x n]``, zeros past what was pushed."""
        lo, hi = start - self._buf_start, end - self._buf_start
        piece = self._buf[:, lo:hi]
        if piece.shape[1] < hi - lo:
            piece = np.pad(piece, ((0, 0), (0, hi - lo - piece.shape[1])))
        return np.ascontiguousarray(piece)

    def _emit(self, end: int) -> np.ndarray:
        """Enhance the block at ``_next`` with a window ending at ``end``; ``[C x block]``."""
        g = self.geometry
        start = self._next
        w0 = max(0, start - g.context)
        y = self.engine(self._take(w0, end))
        out = y[:, start - w0:start - w0 + g.block]
        self._next += g.block
        keep = max(0, self._next - g.context)  # the next window's start
        self._buf = self._buf[:, keep - self._buf_start:]
        self._buf_start = keep
        return out

    def _deliver(self, out: list[np.ndarray], n: int | None, mono: bool) -> np.ndarray:
        y = np.concatenate(out, axis=1) if out else np.zeros((self.channels, 0), np.float32)
        self.emitted += y.shape[1]
        if self._delay is not None:
            self._delay.put(y)
            y = self._delay.take(self._delay.size if n is None else n)
        return y[0] if mono else y

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append samples (``[n]`` or ``[C x n]``); return the enhanced samples now final."""
        if self._closed:
            raise StreamError("the stream was flushed; call reset() to start a new one")
        x = self._as_block(samples)
        self._buf = np.concatenate([self._buf, x], axis=1)
        self.pushed += x.shape[1]
        g, out = self.geometry, []
        while self.pushed >= self._next + g.block + g.lookahead:
            out.append(self._emit(self._next + g.block + g.lookahead))
        return self._deliver(out, x.shape[1], np.ndim(samples) == 1)

    def flush(self, mono: bool | None = None) -> np.ndarray:
        """End of stream: enhance the blocks still waiting for look-ahead and return them
        (``[n]`` when the stream is mono, unless ``mono=False``)."""
        if self._closed:
            raise StreamError("the stream was already flushed; call reset() to start a new one")
        total, hop = self.pushed, self.geometry.hop
        padded = -(-total // hop) * hop  # whole-signal processing pads to a whole frame
        out = []
        while self._next < total:
            start = self._next
            block = self._emit(min(start + self.geometry.block + self.geometry.lookahead,
                                   padded))
            out.append(block[:, :total - start])
        self._closed = True
        mono = self.channels == 1 if mono is None else mono
        return self._deliver(out, None, mono)


def stream_signal(stream: StreamDenoiser, wave: np.ndarray, push_size: int) -> np.ndarray:
    """Push ``wave`` (``[n]`` or ``[C x n]``) in pieces of ``push_size`` samples, flush, and
    return everything the stream returned, concatenated (tests, benchmarks)."""
    pieces = [stream.push(wave[..., i:i + push_size])
              for i in range(0, wave.shape[-1], max(1, push_size))]
    pieces.append(stream.flush(mono=wave.ndim == 1))
    return np.concatenate(pieces, axis=-1)


__all__ = ["DEFAULT_BLOCK_MS", "Engine", "StreamDenoiser", "StreamError", "StreamGeometry",
           "block_frames_for", "engine_field", "stream_signal"]

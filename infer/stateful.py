"""Stateful streaming: every layer of the chain keeps its own state, so a block costs its own
compute (not a forward over ``context + block + lookahead`` like :mod:`infer.stream`'s
windowed streamer).

The loaded torch modules are walked and each layer is wrapped in a streaming counterpart that
calls the original module's weights with the same functional op:

- ``Conv1d`` (kernel k, stride s, dilation d, padding p): keeps the inputs that its next output
  still reads (at most ``d(k − 1)`` samples). Its left padding is ``p`` zeros put in front of
  the first input; an output is emitted as soon as its last input arrives, so a centred
  convolution emits output i once input ``i + p`` is in (``p`` samples late).
- ``ConvTranspose1d``: keeps its last ``ceil(span / s) − 1`` input frames (the inputs whose
  kernels overlap outputs not yet final), reruns them with the new frames and emits the
  positions no later input can write; it drops its first ``p`` outputs (the crop).
- DAC residual units (``x + block(x)``) and the denoiser's residuals delay their skip path in a
  FIFO by exactly as much as their block lags.
- Snake, Tanh, LayerNorm, Linear, GELU, the latent normalisation and the quantizer act on each
  sample / frame alone: they run on whatever arrives.
- The ``window`` response normalisation keeps ``grn_window // 2`` frames each side and runs the
  module itself on them.

:meth:`StreamLayer.finish` ends a stream the way offline processing ends a signal: each layer
appends its *own* right padding (a convolution's ``p`` zeros, a transposed convolution's last
overlap, the window statistics' edge) and flushes into the next, layer by layer. The output is
therefore offline processing (:func:`infer.denoise.enhance_whole`) to float rounding, delayed by
the stream's latency (``block + lookahead``, the same as the windowed streamer's: the delays of
the layers add up to the lookahead that :mod:`infer.receptive` computes).

Denoisers with ``grn: global`` (and the seed architecture) normalise over the whole sequence:
no finite state reproduces them, and they are refused (:class:`~infer.stream.StreamError`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cleancodec.core.codec import is_snake
from cleancodec.infer.fileio import Fifo
from cleancodec.infer.stream import Engine, StreamDenoiser, StreamError, StreamGeometry

# dac containers whose forward is ``self.<attribute>(x)`` (a Sequential run in order)
DAC_CONTAINERS = {"Encoder": "block", "EncoderBlock": "block", "Decoder": "model",
                  "DecoderBlock": "block"}
DAC_RESIDUAL = "ResidualUnit"  # ``x + block(x)`` (x centre-cropped to the block's length)
POINTWISE_MODULES = (nn.Tanh, nn.Identity, nn.GELU)
TIME = -1  # the time axis of every streamed tensor ([B x C x T])


def _cat(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a`` then ``b`` along time; ``None`` stands for no samples."""
    if a is None:
        return b
    if b is None:
        return a
    return torch.cat([a, b], dim=TIME)


class StreamLayer:
    """One layer with state. ``step(x)`` takes the next samples ``Tensor[B x C x n]`` (or
    ``None``: none) and returns the outputs that became final, ``Tensor[B x C' x m]`` or
    ``None``; ``finish()`` ends the stream (this layer's own right edge) and returns the rest;
    ``reset()`` forgets the stream."""

    def step(self, x: Tensor | None) -> Tensor | None:
        raise NotImplementedError

    def finish(self) -> Tensor | None:
        return None

    def reset(self) -> None:
        pass


class Pointwise(StreamLayer):
    """A per-sample (per-frame) function: no state, no delay."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        self.fn = fn

    def step(self, x: Tensor | None) -> Tensor | None:
        return None if x is None or x.shape[TIME] == 0 else self.fn(x)


def _channels_last(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` on ``[B x T x C]`` as a function on ``[B x C x T]``."""
    return lambda x: fn(x.transpose(1, 2)).transpose(1, 2)


def _refuse_hooks(module: nn.Module) -> None:
    if module._forward_pre_hooks:
        raise StreamError(f"{type(module).__name__}: forward pre-hooks (weight norm not folded) "
                          "are not supported; load the codec through cleancodec.core.codec, "
                          "which folds weight norm")


class StreamConv1d(StreamLayer):
    """A ``Conv1d`` with zero padding, streamed (see module docstring)."""

    def __init__(self, conv: nn.Conv1d):
        _refuse_hooks(conv)
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise StreamError(f"Conv1d with padding {conv.padding!r} / mode "
                              f"{conv.padding_mode!r}: only numeric zero padding streams")
        self.conv = conv
        self.stride, self.dilation = conv.stride[0], conv.dilation[0]
        self.pad = conv.padding[0]
        self.span = self.dilation * (conv.kernel_size[0] - 1) + 1
        self.pointwise = self.span == 1 and self.stride == 1 and self.pad == 0
        self.reset()

    def reset(self) -> None:
        self.buf: Tensor | None = None

    def _conv(self, x: Tensor) -> Tensor:
        c = self.conv
        return F.conv1d(x, c.weight, c.bias, self.stride, 0, self.dilation, c.groups)

    def _run(self, buf: Tensor) -> Tensor | None:
        """Every output whose inputs are all in ``buf``; keeps the inputs still needed."""
        n = buf.shape[TIME]
        if n < self.span:
            self.buf = buf
            return None
        count = (n - self.span) // self.stride + 1
        y = self._conv(buf[..., :(count - 1) * self.stride + self.span])
        self.buf = buf[..., count * self.stride:]
        return y

    def _zeros(self, like: Tensor) -> Tensor:
        return like.new_zeros(like.shape[0], like.shape[1], self.pad)

    def step(self, x: Tensor | None) -> Tensor | None:
        if x is None or x.shape[TIME] == 0:
            return None
        if self.pointwise:
            return self._conv(x)
        if self.buf is None:  # the left padding
            self.buf = self._zeros(x)
        return self._run(torch.cat([self.buf, x], dim=TIME))

    def finish(self) -> Tensor | None:
        if self.pointwise or self.buf is None:
            return None
        y = self._run(torch.cat([self.buf, self._zeros(self.buf)], dim=TIME))
        self.buf = None
        return y


class StreamConvTranspose1d(StreamLayer):
    """A ``ConvTranspose1d`` (groups 1, dilation 1) streamed as one matrix product per step
    and an overlap-add state (see module docstring).

    Input frame i writes full-output positions ``i·s … i·s + k − 1``: its ``k`` columns are
    ``xᵢᵀ W`` (W the module's weight seen as ``[C_in x C_out·k]``). Positions before
    ``(i + 1)·s`` are final once frame i is in; the partial sums of the next ``k − s``
    positions wait for the next frames. The module's output is the full output without its
    first and last ``p`` positions.
    """

    def __init__(self, conv: nn.ConvTranspose1d):
        _refuse_hooks(conv)
        self.conv = conv
        self.stride, self.pad = conv.stride[0], conv.padding[0]
        self.kernel = conv.kernel_size[0]
        if (conv.output_padding[0] or conv.padding_mode != "zeros" or conv.groups != 1
                or conv.dilation[0] != 1):
            raise StreamError("ConvTranspose1d with output_padding, groups, dilation or a "
                              "non-zero padding mode does not stream")
        if self.kernel < self.stride or self.pad > self.kernel - self.stride:
            raise StreamError(f"ConvTranspose1d (kernel {self.kernel}, stride {self.stride}, "
                              f"padding {self.pad}): streaming needs kernel ≥ stride and "
                              "padding ≤ kernel − stride")
        self.overlap = -(-self.kernel // self.stride) - 1  # later blocks of s a frame writes
        self.reset()

    def reset(self) -> None:
        self.tail: Tensor | None = None  # [B x overlap x C_out x s]: partial sums ahead
        self.frames = 0  # input frames seen
        self.emitted = 0  # output samples returned
        self.to_drop = self.pad  # left crop still to apply

    def _emit(self, blocks: Tensor) -> Tensor | None:
        """``[B x n x C_out x s]`` final full-output blocks → the module's output samples."""
        y = blocks.permute(0, 2, 1, 3).reshape(blocks.shape[0], blocks.shape[2], -1)
        if self.conv.bias is not None:
            y = y + self.conv.bias[:, None]
        drop = min(self.to_drop, y.shape[TIME])
        self.to_drop -= drop
        self.emitted += y.shape[TIME] - drop
        return y[..., drop:] if y.shape[TIME] > drop else None

    def step(self, x: Tensor | None) -> Tensor | None:
        if x is None or x.shape[TIME] == 0:
            return None
        w, s = self.conv.weight, self.stride
        b, n = x.shape[0], x.shape[TIME]
        cols = torch.matmul(x.transpose(1, 2), w.reshape(w.shape[0], -1))
        cols = cols.view(b, n, w.shape[1], self.kernel)  # [B x n x C_out x k]
        acc = cols.new_zeros(b, n + self.overlap, w.shape[1], s)
        if self.tail is not None:
            acc[:, :self.overlap] += self.tail
        for r in range(self.overlap + 1):
            width = min(s, self.kernel - r * s)
            acc[:, r:r + n, :, :width] += cols[..., r * s:r * s + width]
        self.frames += n
        self.tail = acc[:, n:]
        return self._emit(acc[:, :n])

    def finish(self) -> Tensor | None:
        if self.tail is None:
            return None
        # the module's output length is (frames − 1)·s + k − 2p
        left = (self.frames - 1) * self.stride + self.kernel - 2 * self.pad - self.emitted
        y = self._emit(self.tail)
        self.tail = None
        return None if y is None or left <= 0 else y[..., :left]


class StreamSequential(StreamLayer):
    """Layers in order; ``finish`` flushes each layer into the next."""

    def __init__(self, layers: Sequence[StreamLayer]):
        self.layers = list(layers)

    def step(self, x: Tensor | None) -> Tensor | None:
        for layer in self.layers:
            x = layer.step(x)
            if x is None:
                return None
        return x

    def finish(self) -> Tensor | None:
        x = None
        for layer in self.layers:
            x = _cat(layer.step(x), layer.finish())
        return x

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()


class StreamResidual(StreamLayer):
    """``combine(x, block(x))`` for a length-preserving ``block``: the skip path waits in a
    FIFO until the block's output for the same samples comes out."""

    def __init__(self, block: StreamLayer,
                 combine: Callable[[Tensor, Tensor], Tensor] = torch.add):
        self.block, self.combine = block, combine
        self.reset()

    def reset(self) -> None:
        self.block.reset()
        self.skip: Tensor | None = None

    def _join(self, y: Tensor | None) -> Tensor | None:
        if y is None:
            return None
        n = y.shape[TIME]
        if self.skip is None or self.skip.shape[TIME] < n:
            raise StreamError("residual block emitted more samples than it took (a layer that "
                              "changes the length)")
        x, self.skip = self.skip[..., :n], self.skip[..., n:]
        return self.combine(x, y)

    def step(self, x: Tensor | None) -> Tensor | None:
        if x is None or x.shape[TIME] == 0:
            return None
        self.skip = _cat(self.skip, x)
        return self._join(self.block.step(x))

    def finish(self) -> Tensor | None:
        y = self._join(self.block.finish())
        if self.skip is not None and self.skip.shape[TIME]:
            raise StreamError("residual block ended short of its input (a layer that changes "
                              "the length)")
        self.skip = None
        return y


class StreamWindowGRN(StreamLayer):
    """``GlobalResponseNorm(kind="window")`` streamed: frame i needs frames ``i − h … i + h``
    (h = window // 2, fewer at the signal's edges). The module itself runs on the frames kept
    and the new ones; only the frames whose window lies inside them (or ends at the signal's
    start or end) are kept from its output."""

    def __init__(self, grn: nn.Module):
        self.grn, self.half = grn, grn.window // 2
        self.reset()

    def reset(self) -> None:
        self.buf: Tensor | None = None  # [B x C x n]: frames from buf_start on
        self.buf_start = 0
        self.next = 0  # first frame not emitted
        self.total = 0  # frames seen

    def _emit(self, end: int) -> Tensor | None:
        """Frames ``next … end − 1`` (``end`` ≤ total)."""
        if end <= self.next:
            return None
        y = _channels_last(self.grn)(self.buf)
        out = y[..., self.next - self.buf_start:end - self.buf_start]
        self.next = end
        start = max(0, self.next - self.half)
        self.buf, self.buf_start = self.buf[..., start - self.buf_start:], start
        return out

    def step(self, x: Tensor | None) -> Tensor | None:
        if x is None or x.shape[TIME] == 0:
            return None
        self.buf = _cat(self.buf, x)
        self.total += x.shape[TIME]
        return self._emit(self.total - self.half)

    def finish(self) -> Tensor | None:
        y = self._emit(self.total) if self.buf is not None else None
        self.reset()
        return y


# --- walking the modules ----------------------------------------------------------------------


def _length_preserving(module: nn.Module, name: str) -> None:
    """Refuse a residual block whose convolutions change the length (dac then crops the skip
    path, which a FIFO does not model)."""
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose1d) or (
                isinstance(m, nn.Conv1d) and (m.stride[0] != 1 or isinstance(m.padding, str)
                                              or 2 * m.padding[0] != m.dilation[0]
                                              * (m.kernel_size[0] - 1))):
            raise StreamError(f"{name}: residual block with a length-changing layer "
                              f"({m}) does not stream")


def stream_layer(module: nn.Module) -> StreamLayer:
    """The streaming counterpart of a dac encoder / decoder (or any of their layers)."""
    name = type(module).__name__
    if isinstance(module, nn.Sequential):
        return StreamSequential([stream_layer(m) for m in module])
    if isinstance(module, nn.ConvTranspose1d):
        return StreamConvTranspose1d(module)
    if isinstance(module, nn.Conv1d):
        return StreamConv1d(module)
    if is_snake(module) or isinstance(module, POINTWISE_MODULES):
        return Pointwise(module)
    if name == DAC_RESIDUAL:
        _length_preserving(module.block, name)
        return StreamResidual(stream_layer(module.block))
    if name in DAC_CONTAINERS:
        return stream_layer(getattr(module, DAC_CONTAINERS[name]))
    raise StreamError(f"no streaming counterpart for layer {name} (known: Conv1d, "
                      f"ConvTranspose1d, Snake1d, Tanh, {DAC_RESIDUAL}, "
                      f"{', '.join(DAC_CONTAINERS)})")


def _convnext_block(block: nn.Module) -> StreamLayer:
    """``x + pw2(grn(act(pw1(norm(dwconv(x))))))`` (trainer.models.ConvNeXtBlock1d)."""
    _length_preserving(block.dwconv, "ConvNeXtBlock1d")
    head = [block.norm, block.pw1, block.act]
    layers: list[StreamLayer] = [StreamConv1d(block.dwconv)]
    if block.grn.kind == "window":
        layers += [Pointwise(_channels_last(nn.Sequential(*head))),
                   StreamWindowGRN(block.grn), Pointwise(_channels_last(block.pw2))]
    else:  # "none": the identity, applied as the module does
        layers.append(Pointwise(_channels_last(nn.Sequential(*head, block.grn, block.pw2))))
    return StreamResidual(StreamSequential(layers))


def stream_denoiser(denoiser: nn.Module) -> StreamLayer:
    """The streaming counterpart of a ``trainer.models.Denoiser`` with ``grn`` ``none`` or
    ``window``: ``z + head(norm(blocks(stem(normalize(z))))) · std``.

    Raises StreamError for ``grn: global`` and for the seed architecture (global statistics).
    """
    from cleancodec.trainer.models import Denoiser

    args = getattr(denoiser, "model_args", {})
    if not isinstance(denoiser, Denoiser) or args.get("grn") == "global":
        kind = args.get("arch") or f"grn: {args.get('grn')}"
        raise StreamError(
            f"denoiser {type(denoiser).__name__} ({kind}) normalises with statistics over the "
            "whole sequence (global response normalisation): no finite state reproduces it, "
            "so it cannot stream statefully; train with grn: none or grn: window")
    std = denoiser.stats.std[:, None]
    inner = [Pointwise(denoiser.normalize), StreamConv1d(denoiser.stem),
             *(_convnext_block(b) for b in denoiser.blocks),
             Pointwise(_channels_last(denoiser.norm)), StreamConv1d(denoiser.head),
             Pointwise(lambda h: h * std)]
    for conv in (denoiser.stem, denoiser.head):
        _length_preserving(conv, "Denoiser")
    return StreamResidual(StreamSequential(inner))


class _Stage(StreamLayer):
    """A stage of the chain: its layers under the codec's autocast, output cast to float32
    (as ``Codec.encode`` / ``Enhancer`` / ``Codec.quantize`` / ``Codec.decode`` do)."""

    def __init__(self, layer: StreamLayer,
                 autocast: Callable[[], contextlib.AbstractContextManager]):
        self.layer, self.autocast = layer, autocast

    def step(self, x: Tensor | None) -> Tensor | None:
        with self.autocast():
            y = self.layer.step(x)
        return None if y is None else y.float()

    def finish(self) -> Tensor | None:
        with self.autocast():
            y = self.layer.finish()
        return None if y is None else y.float()

    def reset(self) -> None:
        self.layer.reset()


class StatefulChain:
    """encoder → denoiser → quantizer → decoder of a torch ``Enhancer``, as streaming layers.

    ``step(x)``: float32 ``[B x n]`` 16 kHz samples → the output samples that became final,
    ``[B x m]`` (output sample i is offline output sample i). ``finish()`` ends the stream:
    the input must have been a whole number of hops (the caller pads the last one with zeros,
    as ``Codec.encode`` does).
    """

    def __init__(self, engine: Engine):
        codec = getattr(engine, "codec", None)
        if codec is None or not hasattr(codec, "model"):
            raise StreamError(f"{type(engine).__name__}: the stateful stream needs a torch "
                              "engine (codec + denoiser modules); use the windowed stream")
        self.codec = codec
        model, autocast = codec.model, codec._autocast
        n_q = codec.n_codebooks
        stages = [_Stage(stream_layer(model.encoder), autocast)]
        denoiser = getattr(engine, "denoiser", None)
        if denoiser is not None:
            stages.append(_Stage(stream_denoiser(denoiser), autocast))
        stages += [_Stage(Pointwise(lambda z: model.quantizer(z, n_quantizers=n_q)[0]),
                          autocast),
                   _Stage(stream_layer(model.decoder), autocast)]
        self.chain = StreamSequential(stages)

    def reset(self) -> None:
        self.chain.reset()

    @staticmethod
    def _out(y: Tensor | None, rows: int) -> np.ndarray:
        if y is None:
            return np.zeros((rows, 0), np.float32)
        return y[:, 0].cpu().numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def step(self, waves: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(waves, np.float32))[:, None]
        return self._out(self.chain.step(x.to(self.codec.device)), waves.shape[0])

    @torch.inference_mode()
    def finish(self, rows: int) -> np.ndarray:
        return self._out(self.chain.finish(), rows)


class StatefulStream(StreamDenoiser):
    """:class:`~infer.stream.StreamDenoiser`'s API and timing (blocks, latency ``block +
    lookahead``, aligned or fixed-delay output, ``push`` / ``flush`` / ``reset``), computed by
    a :class:`StatefulChain`: the chain runs once per block on the block's new samples.

    Input is run through the chain in whole hops; a block is returned once ``lookahead``
    samples past its end have been pushed (by then the chain has emitted it).
    """

    def __init__(self, engine: Engine, geometry: StreamGeometry, channels: int = 1,
                 fixed_delay: bool = False):
        self.chain = StatefulChain(engine)
        super().__init__(engine, geometry, channels, fixed_delay)

    def reset(self) -> None:
        super().reset()
        self.chain.reset()
        self._pending = np.zeros((self.channels, 0), np.float32)  # pushed, not yet run
        self._ready = Fifo(self.channels)  # chain output not yet returned

    def describe(self) -> str:
        """One line: block, lookahead and latency in ms, and the per-block work."""
        g = self.geometry
        return (f"block {g.block_ms:.0f} ms + lookahead {g.ms(g.lookahead):.0f} ms = latency "
                f"{g.latency_ms:.0f} ms; stateful: each block runs the chain on its own "
                f"{g.block_ms:.0f} ms (layer state carried between blocks)")

    def _run(self, samples: int) -> None:
        """Run the first ``samples`` pending samples through the chain."""
        if samples:
            self._ready.put(self.chain.step(self._pending[:, :samples]))
            self._pending = self._pending[:, samples:]

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append samples (``[n]`` or ``[C x n]``); return the enhanced samples now final."""
        if self._closed:
            raise StreamError("the stream was flushed; call reset() to start a new one")
        x = self._as_block(samples)
        self._pending = np.concatenate([self._pending, x], axis=1)
        self.pushed += x.shape[1]
        g, out = self.geometry, []
        while self.pushed >= self._next + g.block + g.lookahead:
            if self._ready.size < g.block:
                self._run(self._pending.shape[1] // g.hop * g.hop)
            if self._ready.size < g.block:
                raise RuntimeError(f"stateful stream: the chain emitted {self._ready.size} of "
                                   f"{g.block} samples after {self.pushed} pushed (the "
                                   "lookahead is too short for these layers)")
            out.append(self._ready.take(g.block))
            self._next += g.block
        return self._deliver(out, x.shape[1], np.ndim(samples) == 1)

    def flush(self, mono: bool | None = None) -> np.ndarray:
        """End of stream: pad the input to a whole hop (as offline encoding does), let every
        layer finish in turn, and return the rest (``[n]`` when the stream is mono, unless
        ``mono=False``)."""
        if self._closed:
            raise StreamError("the stream was already flushed; call reset() to start a new one")
        rest = self.pushed - self._next
        if self.pushed:
            pad = -self._pending.shape[1] % self.geometry.hop
            self._pending = np.pad(self._pending, ((0, 0), (0, pad)))
            self._run(self._pending.shape[1])
            self._ready.put(self.chain.finish(self.channels))
        y = self._ready.take(rest)
        y = np.pad(y, ((0, 0), (0, rest - y.shape[1])))  # offline decoding pads the end too
        self._closed = True
        mono = self.channels == 1 if mono is None else mono
        return self._deliver([y], None, mono)


__all__ = ["Pointwise", "StatefulChain", "StatefulStream", "StreamConv1d",
           "StreamConvTranspose1d", "StreamLayer", "StreamResidual", "StreamSequential",
           "StreamWindowGRN", "stream_denoiser", "stream_layer"]

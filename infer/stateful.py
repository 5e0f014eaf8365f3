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
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from cleancodec.core.codec import is_snake
from cleancodec.infer.fileio import Fifo
from cleancodec.infer.stream import Engine, StreamDenoiser, StreamError, StreamGeometry
from cleancodec.infer.stream_layers import (
    Pointwise,
    StreamConv1d,
    StreamConvTranspose1d,
    StreamLayer,
    StreamResidual,
    StreamSequential,
    StreamWindowGRN,
    channels_last,
)

# dac containers whose forward is ``self.<attribute>(x)`` (a Sequential run in order)
DAC_CONTAINERS = {"Encoder": "block", "EncoderBlock": "block", "Decoder": "model",
                  "DecoderBlock": "block"}
DAC_RESIDUAL = "ResidualUnit"  # ``x + block(x)`` (x centre-cropped to the block's length)
POINTWISE_MODULES = (nn.Tanh, nn.Identity, nn.GELU)


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
        layers += [Pointwise(channels_last(nn.Sequential(*head))),
                   StreamWindowGRN(block.grn), Pointwise(channels_last(block.pw2))]
    else:  # "none": the identity, applied as the module does
        layers.append(Pointwise(channels_last(nn.Sequential(*head, block.grn, block.pw2))))
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
             Pointwise(channels_last(denoiser.norm)), StreamConv1d(denoiser.head),
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

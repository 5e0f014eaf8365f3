"""Stateful streaming: every layer of the chain keeps its own state, so a block costs its own
compute (not a forward over ``context + block + lookahead`` like :mod:`infer.stream`'s
windowed streamer).

The loaded torch modules are walked and each layer is wrapped in a streaming counterpart
(:mod:`infer.stream_layers`) that calls the original module's weights with the same functional
op. Each takes ``n`` new samples and returns ``n · rate`` outputs, the latest its inputs
determine, so each lags by a fixed number of samples:

- ``Conv1d`` (kernel k, stride s, dilation d, padding p): keeps the inputs that its next outputs
  still read (``d(k − 1) + 1 − s`` samples, up to ``s − 1`` more so that its outputs fall on
  the offline grid); a centred convolution emits output i once input ``i + p`` is in.
- ``ConvTranspose1d`` (stride s, kernel k): output block j of s samples is final once input
  frame j is in; it keeps the last ``⌈k / s⌉ − 1`` frames (eager torch computes it as a
  convolution over its input frames, an exported step with ``ConvTranspose`` over the kept
  frames and the block); its crop of ``p`` samples is a delay of ``p``.
- DAC residual units (``x + block(x)``) and the denoiser's residuals delay their skip path in a
  FIFO by exactly as much as their block lags.
- Snake, Tanh, LayerNorm, Linear, GELU, the latent normalisation and the quantizer act on each
  sample / frame alone: they run on whatever arrives.
- The ``window`` response normalisation keeps ``grn_window − 1`` frames.

The lags add up to the lookahead that :mod:`infer.receptive` computes, so the latency is the
windowed streamer's (``block + lookahead``). Offline processing pads every layer's input with
zeros; a stream starts from states of zeros and ends (``flush``) by running zeros through the
chain with the signal's length given, and each layer zeroes its inputs outside the signal
before reading them. The output is therefore offline processing
(:func:`infer.denoise.enhance_whole`) to float rounding, delayed by the latency.

The whole chain is one ``nn.Module``, :class:`StepGraph`: ``(wave, position, end, *state) →
(enhanced, *state)``. torch runs it eagerly (:class:`TorchStepChain`); ``cleancodec export
--full --streaming`` writes it as an ONNX graph with its state as inputs and outputs, which
onnxruntime runs the same way (:class:`infer.onnx_engine.OnnxStepChain`).

Denoisers with ``grn: global`` (and the seed architecture) normalise over the whole sequence:
no finite state reproduces them, and they are refused (:class:`~infer.stream.StreamError`).
"""
from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cleancodec.core.codec import is_snake
from cleancodec.infer.fileio import Fifo
from cleancodec.infer.stream import Engine, StreamDenoiser, StreamError, StreamGeometry
from cleancodec.infer.stream_layers import (
    At,
    ChannelsLast,
    Pointwise,
    StepLayer,
    StreamConv1d,
    StreamConvTranspose1d,
    StreamResidual,
    StreamSequential,
    StreamWindowGRN,
    inside,
)

# dac containers whose forward is ``self.<attribute>(x)`` (a Sequential run in order)
DAC_CONTAINERS = {"Encoder": "block", "EncoderBlock": "block", "Decoder": "model",
                  "DecoderBlock": "block"}
DAC_RESIDUAL = "ResidualUnit"  # ``x + block(x)`` (x centre-cropped to the block's length)
POINTWISE_MODULES = (nn.Tanh, nn.Identity, nn.GELU)
# the signal's length while a stream runs (unknown): past any position (2^40 samples is 2 years
# at 16 kHz; upsampled by the hop it stays far inside int64)
END_UNKNOWN = 2 ** 40


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


def _in_channels(module: nn.Module, name: str) -> int:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv1d)), None)
    if conv is None:
        raise StreamError(f"{name}: residual block without a convolution does not stream")
    return conv.in_channels


def stream_layer(module: nn.Module) -> StepLayer:
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
        return StreamResidual(stream_layer(module.block), _in_channels(module.block, name))
    if name in DAC_CONTAINERS:
        return stream_layer(getattr(module, DAC_CONTAINERS[name]))
    raise StreamError(f"no streaming counterpart for layer {name} (known: Conv1d, "
                      f"ConvTranspose1d, Snake1d, Tanh, {DAC_RESIDUAL}, "
                      f"{', '.join(DAC_CONTAINERS)})")


class _Normalize(nn.Module):
    """The denoiser's input normalisation (per frame)."""

    def __init__(self, stats: nn.Module):
        super().__init__()
        self.stats = stats

    def forward(self, z: Tensor) -> Tensor:
        return self.stats.normalize(z)


class _TimesStd(nn.Module):
    """The denoiser's head output back in raw latent units (per frame)."""

    def __init__(self, stats: nn.Module):
        super().__init__()
        self.stats = stats

    def forward(self, h: Tensor) -> Tensor:
        return h * self.stats.std[:, None]


class _Quantize(nn.Module):
    """DAC's residual vector quantizer with ``n_codebooks`` codebooks (per frame): the ops of
    its ``forward`` that make the quantized latents, in the same order on the same tensors
    (equal to ``quantizer(z, n_codebooks)[0]``, tested), without the losses, codes and
    projected latents it also returns, and with each codebook normalised once (here) instead
    of at every call. A few frames per step make these small ops the cost: a 100 ms step of
    DAC-16k took 3 % less with 2 threads (2026-12-03, 47 interleaved pairs, 96 % faster)."""

    def __init__(self, quantizer: nn.Module, n_codebooks: int):
        super().__init__()
        self.quantizers = quantizer.quantizers[:n_codebooks]
        for i, vq in enumerate(self.quantizers):  # as dac's decode_latents normalises them
            normalized = F.normalize(vq.codebook.weight.detach())  # [N x d]
            self.register_buffer(f"codebook_t_{i}", normalized.t(), persistent=False)
            self.register_buffer(f"codebook_sq_{i}", normalized.pow(2).sum(1, keepdim=True).t(),
                                 persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        b, _, n = z.shape
        zq, residual = None, z
        for i, vq in enumerate(self.quantizers):
            z_e = vq.in_proj(residual)  # [B x d x n]
            encodings = F.normalize(z_e.transpose(1, 2).reshape(b * n, -1))  # [(B·n) x d]
            dist = (encodings.pow(2).sum(1, keepdim=True)
                    - 2 * encodings @ getattr(self, f"codebook_t_{i}")
                    + getattr(self, f"codebook_sq_{i}"))  # [(B·n) x N]
            codes = F.embedding((-dist).max(1)[1], vq.codebook.weight)  # [(B·n) x d]
            z_q = codes.view(b, n, -1).transpose(1, 2)
            z_q = vq.out_proj(z_e + (z_q - z_e))  # dac's straight-through sum, as it computes it
            zq = z_q if zq is None else zq + z_q
            residual = residual - z_q
        return zq


def _convnext_block(block: nn.Module) -> StepLayer:
    """``x + pw2(grn(act(pw1(norm(dwconv(x))))))`` (trainer.models.ConvNeXtBlock1d)."""
    _length_preserving(block.dwconv, "ConvNeXtBlock1d")
    head = [block.norm, block.pw1, block.act]
    layers: list[StepLayer] = [StreamConv1d(block.dwconv)]
    if block.grn.kind == "window":
        layers += [Pointwise(ChannelsLast(*head)),
                   StreamWindowGRN(block.grn, block.pw1.out_features),
                   Pointwise(ChannelsLast(block.pw2))]
    else:  # "none": the identity, applied as the module does
        layers.append(Pointwise(ChannelsLast(*head, block.grn, block.pw2)))
    return StreamResidual(StreamSequential(layers), block.dwconv.in_channels)


def stream_denoiser(denoiser: nn.Module) -> StepLayer:
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
    for conv in (denoiser.stem, denoiser.head):
        _length_preserving(conv, "Denoiser")
    inner = [Pointwise(_Normalize(denoiser.stats)), StreamConv1d(denoiser.stem),
             *(_convnext_block(b) for b in denoiser.blocks),
             Pointwise(ChannelsLast(denoiser.norm)), StreamConv1d(denoiser.head),
             Pointwise(_TimesStd(denoiser.stats))]
    return StreamResidual(StreamSequential(inner), denoiser.stem.in_channels)


class _Stage(StepLayer):
    """A stage of the chain: its layers under the codec's autocast, output cast to float32
    (as ``Codec.encode`` / ``Enhancer`` / ``Codec.quantize`` / ``Codec.decode`` do)."""

    def __init__(self, layer: StepLayer,
                 autocast: Callable[[], contextlib.AbstractContextManager]):
        super().__init__()
        self.layer, self.autocast = layer, autocast

    def bind(self, lag: int) -> int:
        return self.layer.bind(lag)

    def state_shapes(self, batch):
        return self.layer.state_shapes(batch)

    def step(self, x, at, state, new_state):
        with self.autocast():
            y, at = self.layer.step(x, at, state, new_state)
        return y.float(), at


class StepGraph(nn.Module):
    """encoder → denoiser → quantizer → decoder as one streaming step (``denoiser`` None: the
    codec alone).

    ``forward(wave, position, end, *state)``: ``wave`` float32 ``[B x n]`` 16 kHz samples (n a
    multiple of the hop) that start at sample ``position`` of the stream; ``end`` the stream's
    length once known (padded to a whole hop), else :data:`END_UNKNOWN`; ``state`` the tensors
    of :meth:`state_shapes` (zeros at the start). Returns ``enhanced[B x n]`` — offline output
    samples ``position − lag …`` (those before 0 or from ``end`` on mean nothing) — and the new
    state tensors.
    """

    def __init__(self, codec_model: nn.Module, denoiser: nn.Module | None, n_codebooks: int,
                 autocast: Callable[[], contextlib.AbstractContextManager] = (
                     contextlib.nullcontext)):
        super().__init__()
        stages = [_Stage(stream_layer(codec_model.encoder), autocast)]
        if denoiser is not None:
            stages.append(_Stage(stream_denoiser(denoiser), autocast))
        stages += [_Stage(Pointwise(_Quantize(codec_model.quantizer, n_codebooks)), autocast),
                   _Stage(stream_layer(codec_model.decoder), autocast)]
        self.chain = StreamSequential(stages)
        self.lag = self.chain.bind(0)

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return self.chain.state_shapes(batch)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> list[Tensor]:
        """The state at the start of a stream: zeros."""
        return [torch.zeros(shape, device=device) for shape in self.state_shapes(batch)]

    def forward(self, wave: Tensor, position, end, *state: Tensor) -> tuple[Tensor, ...]:
        new_state: list[Tensor] = []
        y, at = self.chain.step(wave[:, None], At(position, end), iter(state), new_state)
        return (inside(y, at)[:, 0], *new_state)  # offline decoding pads its end with zeros


def tail_samples(lag: int, hop: int) -> int:
    """Zeros to run through a step graph after a signal's end (whole hops covering its
    ``lag``) so that every output sample up to the end comes out."""
    return -(-lag // hop) * hop


# --- running a step graph block by block ------------------------------------------------------


class StepChain:
    """A step graph run block by block over one stream: keeps its state and position, and
    returns only offline output samples (the chain's first ``lag`` samples come before the
    signal).

    ``step(waves)``: float32 ``[B x n]`` (n a multiple of ``hop``) → the output samples that
    became final, ``[B x m]`` (output sample i is offline output sample i). ``finish(rows)``
    ends the stream: the input must have been a whole number of hops (the caller pads the last
    one with zeros, as ``Codec.encode`` does). Subclasses run the graph (:meth:`_run`).
    """

    def __init__(self, lag: int, hop: int):
        self.lag, self.hop = lag, hop
        self.reset()

    def reset(self) -> None:
        self.position = 0  # samples taken
        self.state: list | None = None

    def prepare(self, samples: int, batch: int) -> None:
        """Get ready for steps of ``[batch x samples]`` (a stream's block); nothing here."""

    def _run(self, waves: np.ndarray, position: int, end: int) -> np.ndarray:
        """One step of the graph on ``waves`` (updates ``self.state``; None: zeros)."""
        raise NotImplementedError

    def _take(self, waves: np.ndarray, end: int, keep: int) -> np.ndarray:
        first = self.position - self.lag  # offline index of the output's first sample
        y = self._run(np.ascontiguousarray(waves, np.float32), self.position, end)
        self.position += waves.shape[1]
        return y[:, max(0, -first):keep]

    def step(self, waves: np.ndarray) -> np.ndarray:
        if waves.shape[1] % self.hop:
            raise ValueError(f"a step takes whole hops of {self.hop} samples, got "
                             f"{waves.shape[1]}")
        return self._take(waves, END_UNKNOWN, waves.shape[1])

    def finish(self, rows: int) -> np.ndarray:
        end = self.position
        if not end:
            return np.zeros((rows, 0), np.float32)
        zeros = np.zeros((rows, tail_samples(self.lag, self.hop)), np.float32)
        return self._take(zeros, end, self.lag)  # outputs up to the signal's end


class _InteriorStep(nn.Module):
    """``graph`` at one position inside the signal with its end unknown: ``(wave, *state) →
    (enhanced, *state)``. There no layer masks its input (:func:`~infer.stream_layers.inside`
    returns it as it is), so the ops do not depend on the position: the form torch traces."""

    def __init__(self, graph: StepGraph, position: int):
        super().__init__()
        self.graph, self.position = graph, position

    def forward(self, wave: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        return self.graph(wave, self.position, END_UNKNOWN, *state)


class _Compiled:
    """One engine's step graph and its traced steps, shared by every stream of the engine
    while its modules and weights stay the same (``key``)."""

    def __init__(self, graph: StepGraph, hop: int, key: tuple):
        self.graph, self.key = graph, key
        # every layer's input is inside the signal once the chain's output is (delays only
        # add up along the chain); twice the lag leaves room for the strided layers' rounding
        # and the window statistics' half window (a trace that meets an edge raises, tested)
        self.interior_from = 2 * tail_samples(graph.lag, hop)
        self.traces: dict[tuple[int, int], torch.jit.ScriptModule] = {}
        self.lock = threading.Lock()

    def trace(self, batch: int, samples: int, device: torch.device) -> torch.jit.ScriptModule:
        """The step on ``[batch x samples]`` as a frozen TorchScript graph (traced once)."""
        key = (batch, samples)
        with self.lock:
            if key not in self.traces:
                step = _InteriorStep(self.graph, self.interior_from).eval()
                example = (torch.zeros(batch, samples, device=device),
                           *self.graph.initial_state(batch, device))
                with torch.no_grad(), warnings.catch_warnings():
                    # the positions are Python ints: that the tracer makes them constants is
                    # the point; TorchScript's deprecation names torch.compile / torch.export
                    # instead, which fuse ops (unlike the offline path) or ran slower than eager
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.traces[key] = torch.jit.freeze(
                        torch.jit.trace(step, example, check_trace=False))
            return self.traces[key]


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(*modules: nn.Module | None) -> tuple:
    """Which modules, and which in-place version of each of their tensors: a stream opened
    after a module was swapped or a weight changed (``load_state_dict``) builds a new graph:
    the quantizer's normalised codebooks are copies, and freezing may fold weights into new
    constants."""
    return tuple((id(m), *((id(t), t._version) for t in (*m.parameters(), *m.buffers())))
                 for m in modules if m is not None)


class TorchStepChain(StepChain):
    """:class:`StepChain` with the torch modules of an ``Enhancer``, under the codec's
    autocast.

    Steps run eagerly, except steps of a size given to :meth:`prepare` that lie inside the
    signal (from ``interior_from`` samples on, the end not yet known): those run the same ops
    as a traced, frozen TorchScript graph, without Python's cost per op. That made a 100 ms
    step of DAC-16k 11–15 % faster with 2 threads and 8 % with 1 (2026-12-03, 27–37
    interleaved pairs, 97–100 % of them faster), with the same output to the bit. It is run
    without the TorchScript executor's optimisations (no profiling runs, no fusion): the ops
    are those of the eager step. bf16 autocast runs eagerly.
    """

    def __init__(self, engine: Engine):
        codec = getattr(engine, "codec", None)
        if codec is None or not hasattr(codec, "model"):
            raise StreamError(f"{type(engine).__name__}: the stateful stream needs a torch "
                              "engine (codec + denoiser modules) or a graph written by "
                              "`cleancodec export --full --streaming`")
        self.device = codec.device
        denoiser = getattr(engine, "denoiser", None)
        key = (codec.n_codebooks, *_weights_key(codec.model, denoiser))
        compiled = _COMPILED.get(engine)
        if compiled is None or compiled.key != key:
            graph = StepGraph(codec.model, denoiser, codec.n_codebooks, codec._autocast)
            _COMPILED[engine] = compiled = _Compiled(graph, codec.hop_length, key)
        self.compiled, self.graph = compiled, compiled.graph
        self.traceable = not codec.cfg.bf16
        self.traced: dict[tuple[int, int], torch.jit.ScriptModule] = {}
        super().__init__(self.graph.lag, codec.hop_length)

    def prepare(self, samples: int, batch: int) -> None:
        """Trace the step for ``[batch x samples]`` (about a second for DAC-16k, once per
        engine and size), so that such steps inside the signal run traced."""
        if self.traceable:
            self.traced[batch, samples] = self.compiled.trace(batch, samples, self.device)

    @torch.inference_mode()
    def _run(self, waves, position, end):
        if self.state is None:
            self.state = self.graph.initial_state(waves.shape[0], self.device)
        x = torch.from_numpy(waves).to(self.device)
        traced = self.traced.get(waves.shape)
        if traced is not None and end == END_UNKNOWN and position >= self.compiled.interior_from:
            with torch.jit.optimized_execution(False):
                y, *self.state = traced(x, *self.state)
        else:
            y, *self.state = self.graph(x, position, end, *self.state)
        return y.cpu().numpy().astype(np.float32, copy=False)


def step_chain(engine: Engine) -> StepChain:
    """The stateful chain of ``engine``: its own (an ONNX step graph's) or the torch one."""
    own = getattr(engine, "step_chain", None)
    return own() if callable(own) else TorchStepChain(engine)


class StatefulStream(StreamDenoiser):
    """:class:`~infer.stream.StreamDenoiser`'s API and timing (blocks, latency ``block +
    lookahead``, aligned or fixed-delay output, ``push`` / ``flush`` / ``reset``), computed by
    a :class:`StepChain`: the chain runs once per block on the block's new samples.

    Input is run through the chain in whole hops; a block is returned once ``lookahead``
    samples past its end have been pushed (by then the chain has emitted it).
    """

    def __init__(self, engine: Engine, geometry: StreamGeometry, channels: int = 1,
                 fixed_delay: bool = False):
        self.chain = step_chain(engine)
        super().__init__(engine, geometry, channels, fixed_delay)
        if self.chain.lag > geometry.lookahead:
            raise StreamError(f"the layers lag {self.chain.lag} samples, more than the "
                              f"receptive lookahead of {geometry.lookahead}")
        self.chain.prepare(geometry.block, channels)

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

    def _step_samples(self) -> int:
        """The next step's input: one block when one to two blocks are pending (the size
        :meth:`StepChain.prepare` readied), else every whole hop pending (one long step costs
        less than several short ones)."""
        g = self.geometry
        hops = self._pending.shape[1] // g.hop * g.hop
        return g.block if g.block <= hops < 2 * g.block else hops

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append samples (``[n]`` or ``[C x n]``); return the enhanced samples now final."""
        if self._closed:
            raise StreamError("the stream was flushed; call reset() to start a new one")
        x = self._as_block(samples)
        self._pending = np.concatenate([self._pending, x], axis=1)
        self.pushed += x.shape[1]
        g, out = self.geometry, []
        while self.pushed >= self._next + g.block + g.lookahead:
            while self._ready.size < g.block and self._pending.shape[1] >= g.hop:
                self._run(self._step_samples())
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


__all__ = ["END_UNKNOWN", "StatefulStream", "StepChain", "StepGraph", "TorchStepChain",
           "step_chain", "stream_denoiser", "stream_layer", "tail_samples"]

"""Stateful streaming: the chain's streaming step (:class:`infer.step_graph.StepGraph`, every
layer with its own state) run block by block, so a block costs its own compute (not a forward
over ``context + block + lookahead`` like :mod:`infer.stream`'s windowed streamer), and the
streamer around it (:class:`StatefulStream`: the windowed streamer's API, latency and output).

torch runs the step (:class:`TorchStepChain`: eagerly, and as a traced graph for block-sized
steps inside the signal); a graph written by ``cleancodec export --full --streaming`` runs in
onnxruntime the same way (:class:`infer.onnx_engine.OnnxStepChain`).
"""
from __future__ import annotations

import threading
import warnings
import weakref

import numpy as np
import torch
from torch import Tensor, nn

from cleancodec.infer.arena import move_to_huge_pages
from cleancodec.infer.fileio import Fifo
from cleancodec.infer.step_graph import END_UNKNOWN, StepGraph, tail_samples
from cleancodec.infer.stream import Engine, StreamDenoiser, StreamError, StreamGeometry

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
_BUILDING = threading.Lock()  # builds one engine's graph at a time


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
    are those of the eager step. bf16 autocast runs eagerly. The graph's rearranged weights
    move onto huge pages when it is built, as the engine's own did (:mod:`infer.arena`).
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
        with _BUILDING:
            compiled = _COMPILED.get(engine)
            if compiled is None or compiled.key != key:
                graph = StepGraph(codec.model, denoiser, codec.n_codebooks, codec._autocast,
                                  fold=not codec.cfg.bf16)
                # its own rearranged weights, before any step reads them (the modules' moved
                # with the engine): one graph at a time, as graphs share the rearranged ones
                move_to_huge_pages(graph)
                _COMPILED[engine] = compiled = _Compiled(graph, codec.hop_length, key)
        self.compiled = compiled
        self.traceable = not codec.cfg.bf16
        self.traced: dict[tuple[int, int], torch.jit.ScriptModule] = {}
        super().__init__(self.graph.lag, codec.hop_length)

    @property
    def graph(self) -> StepGraph:
        return self.compiled.graph

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


__all__ = ["StatefulStream", "StepChain", "TorchStepChain", "step_chain"]

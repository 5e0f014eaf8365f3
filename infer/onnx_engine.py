"""Run an exported full graph (``cleancodec export --full``) with onnxruntime.

:class:`OnnxEnhancer` stands in for the torch :class:`~cleancodec.infer.denoise.Enhancer`
wherever one is used: chunked file denoising (``infer.run``) and streaming (``infer.stream``).
It maps float32 ``[B x T]`` 16 kHz waves to ``[B x T]``, padding ``T`` to a multiple of the hop
(the graph's sample axis is dynamic in whole frames) and trimming the output back. A graph
written with ``--streaming`` (a step with its layer state as inputs and outputs) does the same
in one step over the whole signal, and streams statefully (:class:`OnnxStepChain`, used by
``infer.stateful.StatefulStream``); a plain full graph streams windowed. Sample rate,
hop, codec identity and receptive field come from the graph's metadata, so neither torch
models nor the codec weights are loaded. ``infer.engines.load_engine`` picks the torch or the
ONNX engine for ``cleancodec denoise --engine`` and imports this module only for the latter.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig
from cleancodec.infer.denoise import Enhancer
from cleancodec.infer.export import (
    BATCH_AXIS,
    FULL_INPUT,
    FULL_OUTPUT,
    KIND_FULL,
    KIND_STREAM,
    ExportError,
    onnx_session,
    read_metadata,
    stream_feed,
)
from cleancodec.infer.receptive import ChainField
from cleancodec.infer.stateful import StepChain
from cleancodec.infer.step_graph import END_UNKNOWN, tail_samples
from cleancodec.infer.stream import StreamError

REQUIRED_KEYS = ("kind", "sample_rate", "hop", "chain_field", "codec_identity")


@dataclass
class GraphCodec:
    """What the rest of ``infer`` reads from ``enhancer.codec``, taken from graph metadata."""

    identity: dict[str, Any]
    is_random: bool
    sample_rate: int
    hop_length: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class OnnxEnhancer(Enhancer):
    """An exported full graph as an enhancer (see module docstring).

    path: the ``.onnx`` file; threads: onnxruntime intra-op threads (0 = its default);
    device: ``cpu``, or ``cuda`` to use onnxruntime's CUDA provider where installed.
    """

    def __init__(self, path: str | Path, threads: int = 0, device: str = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: ONNX model not found")
        self.session = onnx_session(path, threads, device)
        meta = read_metadata(self.session)
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if meta.get("kind", KIND_FULL) not in (KIND_FULL, KIND_STREAM):
            raise ExportError(f"{path}: holds the denoiser alone (kind {meta['kind']!r}); "
                              "`--engine onnx` needs the whole graph: cleancodec export "
                              "--full [--streaming] CHECKPOINT OUT.onnx")
        if missing:
            raise ExportError(f"{path}: not a graph written by `cleancodec export --full` "
                              f"(metadata lacks {', '.join(missing)})")
        self.path, self.meta = path, meta
        identity = json.loads(meta["codec_identity"])
        on_gpu = "CUDAExecutionProvider" in self.session.get_providers()
        self.codec = GraphCodec(identity, bool(json.loads(meta.get("codec_random_init",
                                                                    "false"))),
                                int(meta["sample_rate"]), int(meta["hop"]),
                                torch.device("cuda" if on_gpu else "cpu"))
        self.chain_field = ChainField(**json.loads(meta["chain_field"]))
        self.denoiser = None
        self._bypass = bool(json.loads(meta.get("bypass", "false")))
        self.info = {"step": json.loads(meta.get("step", "null")),
                     "ema": bool(json.loads(meta.get("ema", "false"))), "onnx": str(path)}
        self.checkpoint = meta.get("checkpoint") or None
        self.streaming = meta.get("kind") == KIND_STREAM
        if self.streaming:
            self.lag = int(meta["stream_lag"])
            self.end_unknown = int(meta["end_unknown"])
            self.state_specs = json.loads(meta["stream_states"])

    @property
    def bypass(self) -> bool:
        return self._bypass

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        """Enhance a batch: float32 ``[B x T]`` at 16 kHz → float32 ``[B x T]``."""
        x = np.ascontiguousarray(waves, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"waves must be [B x T], got shape {x.shape}")
        length = x.shape[1]
        pad = (-length) % self.hop
        if pad or length == 0:
            x = np.pad(x, ((0, 0), (0, pad if length else self.hop)))
        if self.streaming:  # one step over the whole signal, run on past its end
            end = x.shape[1]
            x = np.pad(x, ((0, 0), (0, tail_samples(self.lag, self.hop))))
            y = self.session.run([FULL_OUTPUT], stream_feed(
                0, end, x, self.initial_state(x.shape[0])))[0][:, self.lag:]
        else:
            y = self.session.run([FULL_OUTPUT], {FULL_INPUT: x})[0]
        return np.ascontiguousarray(y[:, :length], dtype=np.float32)

    def initial_state(self, batch: int) -> list[np.ndarray]:
        """A streaming graph's state at the start of a stream: zeros."""
        return [np.zeros([batch if d == BATCH_AXIS else d for d in spec["shape"]], np.float32)
                for spec in self.state_specs]

    def step_chain(self) -> OnnxStepChain:
        """The graph run step by step with its state (``--streaming`` exports only)."""
        if not self.streaming:
            raise StreamError(f"{self.path}: a whole-signal graph, without layer state; for "
                              "stateful streaming export it with `cleancodec export --full "
                              "--streaming`")
        return OnnxStepChain(self)

    def describe(self) -> dict[str, Any]:
        """Provenance (for the run report)."""
        return {**super().describe(), "engine": "onnxruntime", "onnx": str(self.path)}


class OnnxStepChain(StepChain):
    """:class:`~infer.stateful.StepChain` run by onnxruntime: a graph written by
    ``cleancodec export --full --streaming``, its state fed back from step to step."""

    def __init__(self, engine: OnnxEnhancer):
        self.engine = engine
        self.outputs = [FULL_OUTPUT, *(spec["output"] for spec in engine.state_specs)]
        super().__init__(engine.lag, engine.hop)

    def _run(self, waves, position, end):
        if self.state is None:
            self.state = self.engine.initial_state(waves.shape[0])
        if end == END_UNKNOWN:  # as the graph spells it
            end = self.engine.end_unknown
        y, *self.state = self.engine.session.run(
            self.outputs, stream_feed(position, end, waves, self.state))
        return y


def load_onnx_engine(onnx: str | Path, codec_cfg: CodecConfig) -> OnnxEnhancer:
    """The exported full graph at ``onnx`` run by onnxruntime for ``--engine onnx`` (threads
    from ``codec_cfg.num_threads``, the CUDA provider when ``codec_cfg.device`` names CUDA);
    prints the random-codec banner when the graph's codec is random-init."""
    device = "cuda" if str(codec_cfg.device).startswith("cuda") else "cpu"
    loaded = OnnxEnhancer(onnx, threads=codec_cfg.num_threads, device=device)
    if loaded.codec.is_random:
        print(f"*** {RANDOM_INIT_BANNER} ***", file=sys.stderr)
    return loaded


__all__ = ["GraphCodec", "OnnxEnhancer", "OnnxStepChain", "load_onnx_engine"]

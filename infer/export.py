"""ONNX export: the denoiser alone, or the whole 16 kHz enhancement graph.

- :func:`export_denoiser`: ``trainer.models.Denoiser``, raw latents ``latents[B x D x F]`` →
  ``denoised[B x D x F]``, with dynamic batch and frame axes.
- :func:`export_full`: ``wave[B x T]`` at 16 kHz → ``enhanced[B x T]`` through DAC encoder →
  denoiser → quantizer (all codebooks) → DAC decoder (:class:`EnhanceGraph`), with dynamic
  batch and sample axes; ``T`` must be a multiple of the codec hop (320 samples), which
  ``infer.onnx_engine.OnnxEnhancer`` pads to. The graph's metadata carries the sample rate, hop,
  codec identity and receptive field, so the engine streams and chunks without torch models.

- :func:`export_streaming`: the same chain as one streaming step with its layer state as
  explicit inputs and outputs (:class:`infer.step_graph.StepGraph`), for stateful streaming in
  onnxruntime (``infer.onnx_engine.OnnxStepChain``); a single step over a whole signal is
  offline enhancement, so the engine also denoises files with it.

All use torch's dynamo exporter (``onnxscript``) on the models as they are, with one rewrite of
the graphs that hold the codec (:func:`conv1d_as_conv2d`): their wide 1-D convolutions become
the same 2-D convolutions over ``[B x C x 1 x T]``, which onnxruntime runs in its blocked
channel layout (its ``NCHWc`` transformer, on at the default optimisation level). That made a
100 ms streaming step of DAC-16k 12 % / 13 % faster with 2 / 1 threads and an offline forward
7 % / 11 % (2026-12-03, interleaved pairs; docs/benchmarks.md). Other layer forms (polyphase
upsampling, a polynomial Snake, residual runs split over the time axis) gained too little to
keep (``BENCHMARKS.md``, "ONNX layer forms against the plain export"; commit 755de29).

Every export is written to a temporary file beside the target, run with onnxruntime against the
torch model at two lengths (and batch 2; the streaming step over a 10 s stream, step by step),
and renamed over the target only when they agree (denoiser and each streaming step: max abs
difference ≤ :data:`DENOISER_MAX_ABS` / :data:`STREAM_MAX_ABS`; full graph: SNR ≥
:data:`FULL_MIN_SNR_DB`, since a rounding difference may flip a nearest-code choice of the
quantizer); otherwise :class:`ExportError` says by how much they differ.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cleancodec.core.atomic import atomic_path
from cleancodec.infer.denoise import snr_db
from cleancodec.infer.receptive import ChainField, codec_chain_field

log = logging.getLogger(__name__)

DENOISER_INPUT, DENOISER_OUTPUT = "latents", "denoised"
FULL_INPUT, FULL_OUTPUT = "wave", "enhanced"
STREAM_POSITION, STREAM_END = "position", "end"  # a streaming step's int64 scalar inputs
STREAM_STATE_IN, STREAM_STATE_OUT = "state_in_{}", "state_out_{}"
BATCH_AXIS = "batch"  # the batch axis in the state shapes of the metadata
KIND_DENOISER, KIND_FULL, KIND_STREAM = "denoiser", "full", "stream"
META_PREFIX = "cleancodec."
DENOISER_MAX_ABS = 1e-4  # goal for the denoiser on raw latents
FULL_MIN_SNR_DB = 60.0  # agreement the full graph must reach (float rounding is ≥ 100 dB)
VERIFY_BATCH = 2
VERIFY_FRAMES = (37, 150)  # two lengths: the dynamic axis really is dynamic
VERIFY_AMPLITUDE = 0.1  # scale of the random test waves
VERIFY_SEED = 0
EXPORT_FRAMES = 20  # length of the example input traced by the exporter
STREAM_MAX_ABS = 1e-4  # a streaming step's onnxruntime output against torch's, every step
VERIFY_STREAM_S = 10.0  # length of the stream a streaming export is checked on
VERIFY_STEP_HOPS = (1, 7, 10, 3)  # hops per verification step, cycled (n is dynamic)
MAX_BATCH = 4096  # upper bound of the dynamic batch axis
# A Conv with kernel > 1 and at least this many input and output channels is exported as a 2-D
# convolution (:func:`conv1d_as_conv2d`). onnxruntime's blocked 2-D kernels ran DAC-16k's
# 96-1536-channel convolutions 17-32 % faster and its 64-channel ones (1,600 samples) 43 %
# slower; 1 x 1 convolutions gained nothing (one layer at a time, 2 threads, 2026-12-03).
CONV2D_MIN_CHANNELS = 96
TIME_AXIS_2D = 2  # the axis of size 1 the 2-D convolutions add: [B x C x 1 x T]


class ExportError(RuntimeError):
    """An export failed, or the exported graph does not agree with torch."""


@dataclass
class ExportReport:
    """What one export wrote and how closely onnxruntime matched torch."""

    path: Path
    kind: str
    max_abs_diff: float
    snr_db: float
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size_bytes: int = 0

    def lines(self) -> list[str]:
        """Human-readable summary."""
        return [f"exported {self.kind} graph to {self.path} ({self.size_bytes / 2**20:.1f} MiB, "
                f"{self.seconds:.1f} s)",
                f"onnxruntime vs torch: max abs difference {self.max_abs_diff:.3g}, SNR "
                f"{self.snr_db:.1f} dB ({'; '.join(self.checks)})"]


class EnhanceGraph(nn.Module):
    """The whole chain as one module: ``wave[B x T] → enhanced[B x T]`` (T a multiple of the
    hop). ``denoiser`` None exports the codec alone (bypass)."""

    def __init__(self, codec_model: nn.Module, denoiser: nn.Module | None, n_codebooks: int):
        super().__init__()
        self.codec_model, self.denoiser, self.n_codebooks = codec_model, denoiser, n_codebooks

    def forward(self, wave: Tensor) -> Tensor:
        z = self.codec_model.encoder(wave[:, None])
        if self.denoiser is not None:
            z = self.denoiser(z)
        zq = self.codec_model.quantizer(z, n_quantizers=self.n_codebooks)[0]
        y = self.codec_model.decoder(zq)[:, 0]
        return nn.functional.pad(y, (0, wave.shape[-1] - y.shape[-1]))


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings about optional packages it does not need here."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def conv1d_as_conv2d(graph, min_channels: int = CONV2D_MIN_CHANNELS) -> int:
    """Rewrite in place every ``Conv`` of ``graph`` (an ``onnx_ir.Graph``) over ``[B x C x T]``
    whose weight is a constant ``[C_out x C_in/groups x k]`` with k > 1 and
    ``min_channels`` or more input and output channels:
    ``Unsqueeze`` → the ``Conv`` with a ``1 x k`` kernel (stride, dilation and padding 1 / 0 on
    the new axis) → ``Squeeze``. The products and sums are the same. Returns the number
    rewritten."""
    import onnx_ir as ir

    axes = ir.Value(name="conv2d_axes", const_value=ir.tensor(np.array([TIME_AXIS_2D],
                                                                        np.int64)))
    rewritten, made = 0, {}  # made: the 2-D weight of each 1-D one (a weight may be shared)
    for node in list(graph):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        weight = node.inputs[1]
        tensor = weight.const_value if weight is not None else None
        if tensor is None or len(tensor.shape) != 3:
            continue
        attrs = node.attributes
        groups = attrs.get_int("group", 1)
        c_out, c_in, k = tensor.shape
        c_in *= groups
        if (k == 1 or min(c_in, c_out) < min_channels
                or attrs.get_string("auto_pad", "NOTSET") != "NOTSET"):
            continue
        if not rewritten:
            graph.register_initializer(axes)
        weight_2d = made.get(weight.name)
        if weight_2d is None:
            weight_2d = made[weight.name] = ir.Value(name=f"{weight.name}_2d", const_value=(
                ir.tensor(np.ascontiguousarray(tensor.numpy()[:, :, None, :]))))
            graph.register_initializer(weight_2d)
        pads = attrs.get_ints("pads", (0, 0))
        unsqueeze = ir.node("Unsqueeze", [node.inputs[0], axes])
        conv = ir.node("Conv", [unsqueeze.outputs[0], weight_2d, *node.inputs[2:]], {
            "kernel_shape": [1, k], "group": groups,
            "strides": [1, *attrs.get_ints("strides", (1,))],
            "dilations": [1, *attrs.get_ints("dilations", (1,))],
            "pads": [0, pads[0], 0, pads[1]]}, name=node.name)
        squeeze = ir.node("Squeeze", [conv.outputs[0], axes])
        graph.insert_before(node, [unsqueeze, conv, squeeze])
        old = node.outputs[0]
        ir.convenience.replace_all_uses_with(old, squeeze.outputs[0], replace_graph_outputs=True)
        graph.remove(node, safe=True)
        squeeze.outputs[0].name = old.name
        if not weight.uses():
            graph.initializers.pop(weight.name)
        rewritten += 1
    return rewritten


def _export(module: nn.Module, args: tuple, names: tuple[Sequence[str], Sequence[str]],
            dynamic: tuple, metadata: dict[str, Any], tmp: Path, path: Path,
            conv2d: bool = False) -> None:
    """Trace ``module`` on ``args`` and save the ONNX graph (one file) at ``tmp``
    (``names``: input and output names; ``path``: the target, named in errors; ``conv2d``:
    rewrite its wide convolutions, :func:`conv1d_as_conv2d`)."""
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module.eval(), args, dynamo=True, verbose=False, input_names=list(names[0]),
                output_names=list(names[1]), dynamic_shapes=dynamic)
    except Exception as exc:  # the exporter raises many types; report them as one
        raise ExportError(f"{path}: torch could not export the graph "
                          f"({type(exc).__name__}: {exc})") from exc
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()  # the exporter's stack traces name this machine's paths
    if conv2d:
        conv1d_as_conv2d(program.model.graph)
    for key, value in metadata.items():
        program.model.metadata_props[META_PREFIX + key] = (
            value if isinstance(value, str) else json.dumps(value))
    program.save(str(tmp), external_data=False)


def onnx_session(path: str | Path, threads: int = 0, device: str = "cpu"):
    """An onnxruntime session (``threads`` 0: onnxruntime's default; ``device`` ``cuda`` uses
    the CUDA provider when this onnxruntime has it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") \
            from exc


def read_metadata(session) -> dict[str, str]:
    """The ``cleancodec.*`` metadata of a session's model, without the prefix."""
    meta = session.get_modelmeta().custom_metadata_map
    return {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX)}


def _verify(tmp: Path, module: nn.Module, inputs: Sequence[np.ndarray], names: tuple[str, str],
            report: ExportReport) -> None:
    """Run torch and onnxruntime (the graph at ``tmp``) on ``inputs``; record the worst
    difference in ``report``."""
    path = report.path
    session = onnx_session(tmp)
    worst, snr = 0.0, float("inf")
    for x in inputs:
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        got = session.run([names[1]], {names[0]: x})[0]
        if got.shape != ref.shape:
            raise ExportError(f"{path}: onnxruntime returned shape {got.shape} for input "
                              f"{x.shape}, torch {ref.shape}")
        diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        worst, snr = max(worst, diff), min(snr, snr_db(ref, got))
        report.checks.append(f"{names[0]} {list(x.shape)}: {diff:.3g}")
    report.max_abs_diff, report.snr_db = worst, snr


def _publish_checked(path: str | Path, kind: str, write, check) -> ExportReport:
    """Write with ``write(tmp)``, verify with ``check(tmp, report)``, publish over ``path``."""
    path = Path(path)
    start = time.perf_counter()
    report = ExportReport(path, kind, float("nan"), float("nan"))
    with atomic_path(path) as tmp:
        write(tmp)
        check(tmp, report)
        report.size_bytes = tmp.stat().st_size
    report.seconds = time.perf_counter() - start
    return report


def _provenance(info: dict[str, Any] | None, checkpoint: str | Path | None) -> dict[str, Any]:
    info = info or {}
    return {"checkpoint": str(checkpoint) if checkpoint else "", "step": info.get("step"),
            "ema": bool(info.get("ema")), "torch_version": torch.__version__}


def _chain_metadata(kind: str, codec, denoiser: nn.Module | None, chain: ChainField | None,
                    info: dict[str, Any] | None, checkpoint: str | Path | None) -> dict[str, Any]:
    """What an engine needs to know of a whole-chain graph (``kind`` full or stream)."""
    chain = chain or codec_chain_field(codec, denoiser)
    return {"kind": kind, "sample_rate": codec.sample_rate, "hop": codec.hop_length,
            "n_codebooks": codec.n_codebooks, "codec_identity": codec.identity,
            "codec_random_init": codec.is_random, "chain_field": chain.to_dict(),
            "bypass": denoiser is None,
            "model_args": denoiser.model_args if denoiser is not None else None,
            **_provenance(info, checkpoint)}


# --- the exports --------------------------------------------------------------------------


def export_denoiser(denoiser: nn.Module, path: str | Path, info: dict[str, Any] | None = None,
                    checkpoint: str | Path | None = None) -> ExportReport:
    """Export ``denoiser`` (raw latents ``[B x D x F]`` → ``[B x D x F]``), verified on latents
    drawn with its cache statistics (see module docstring)."""
    denoiser = denoiser.float().cpu().eval()
    dim = int(denoiser.model_args["latent_dim"])
    stats = getattr(denoiser, "stats", None)  # none for the seed arch (raw latents): N(0, 1)
    mean = stats.mean.detach().numpy()[None, :, None] if stats is not None else np.zeros((1,))
    std = stats.std.detach().numpy()[None, :, None] if stats is not None else np.ones((1,))
    rng = np.random.default_rng(VERIFY_SEED)
    inputs = [(mean + std * rng.standard_normal((VERIFY_BATCH, dim, f))).astype(np.float32)
              for f in VERIFY_FRAMES]
    example = torch.from_numpy(inputs[0][:, :, :EXPORT_FRAMES].copy())
    dynamic = {0: torch.export.Dim("batch", max=MAX_BATCH), 2: torch.export.Dim("frames")}
    meta = {"kind": KIND_DENOISER, "model_args": denoiser.model_args,
            "receptive_field_frames": denoiser.receptive_field(),
            **_provenance(info, checkpoint)}
    names = (DENOISER_INPUT, DENOISER_OUTPUT)

    def check(tmp: Path, report: ExportReport) -> None:
        _verify(tmp, denoiser, inputs, names, report)
        if not report.max_abs_diff <= DENOISER_MAX_ABS:
            raise ExportError(f"{path}: onnxruntime differs from torch by "
                              f"{report.max_abs_diff:.3g} (max abs, goal ≤ {DENOISER_MAX_ABS})")

    def write(tmp: Path) -> None:
        _export(denoiser, (example,), ([names[0]], [names[1]]), (dynamic,), meta, tmp,
                Path(path))

    return _publish_checked(path, KIND_DENOISER, write, check)


def export_full(codec, denoiser: nn.Module | None, path: str | Path,
                info: dict[str, Any] | None = None, checkpoint: str | Path | None = None,
                chain: ChainField | None = None) -> ExportReport:
    """Export the whole chain of ``codec`` (a ``pipeline.codec.Codec``) with ``denoiser``
    (None: the codec alone), verified on random waves (see module docstring)."""
    if codec.device.type != "cpu":
        raise ExportError("export the full graph from a CPU codec (--device cpu)")
    denoiser = denoiser.float().cpu().eval() if denoiser is not None else None
    graph = EnhanceGraph(codec.model, denoiser, codec.n_codebooks).eval()
    hop = codec.hop_length
    rng = np.random.default_rng(VERIFY_SEED)
    inputs = [(VERIFY_AMPLITUDE * rng.standard_normal((VERIFY_BATCH, f * hop)))
              .astype(np.float32) for f in VERIFY_FRAMES]
    example = torch.from_numpy(inputs[0][:, :EXPORT_FRAMES * hop].copy())
    frames = torch.export.Dim("frames", min=1)
    dynamic = {0: torch.export.Dim("batch", max=MAX_BATCH), 1: hop * frames}
    meta = _chain_metadata(KIND_FULL, codec, denoiser, chain, info, checkpoint)
    names = (FULL_INPUT, FULL_OUTPUT)

    def check(tmp: Path, report: ExportReport) -> None:
        _verify(tmp, graph, inputs, names, report)
        if not report.snr_db >= FULL_MIN_SNR_DB:
            raise ExportError(f"{path}: onnxruntime agrees with torch to only "
                              f"{report.snr_db:.1f} dB SNR (goal ≥ {FULL_MIN_SNR_DB:g} dB; max "
                              f"abs difference {report.max_abs_diff:.3g})")

    def write(tmp: Path) -> None:
        _export(graph, (example,), ([names[0]], [names[1]]), (dynamic,), meta, tmp, Path(path),
                conv2d=True)

    return _publish_checked(path, KIND_FULL, write, check)


def stream_feed(position: int, end: int, wave: np.ndarray,
                 state: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's inputs for one step of a streaming graph."""
    return {FULL_INPUT: wave, STREAM_POSITION: np.array(position, np.int64),
            STREAM_END: np.array(end, np.int64),
            **{STREAM_STATE_IN.format(i): s for i, s in enumerate(state)}}


def export_streaming(codec, denoiser: nn.Module | None, path: str | Path,
                     info: dict[str, Any] | None = None, checkpoint: str | Path | None = None,
                     chain: ChainField | None = None) -> ExportReport:
    """Export the whole chain as one streaming step (:class:`infer.step_graph.StepGraph`):
    inputs ``wave[B x n]`` (n a multiple of the hop), ``position`` and ``end`` (int64 scalars)
    and the state tensors ``state_in_<i>``; outputs ``enhanced[B x n]`` and ``state_out_<i>``.
    The metadata lists the state tensors with their shapes (``"batch"`` for the batch axis),
    the step's lag and the value of ``end`` while the length is unknown.

    Verified block by block against torch over a :data:`VERIFY_STREAM_S` s stream in steps of
    :data:`VERIFY_STEP_HOPS` hops and its end: every step's output must agree to
    :data:`STREAM_MAX_ABS` (max abs).
    """
    from cleancodec.infer.step_graph import END_UNKNOWN, StepGraph, tail_samples

    if codec.device.type != "cpu":
        raise ExportError("export the streaming graph from a CPU codec (--device cpu)")
    denoiser = denoiser.float().cpu().eval() if denoiser is not None else None
    graph = StepGraph(codec.model, denoiser, codec.n_codebooks).eval()
    hop = codec.hop_length
    shapes = graph.state_shapes(VERIFY_BATCH)
    names_in = [FULL_INPUT, STREAM_POSITION, STREAM_END,
                *(STREAM_STATE_IN.format(i) for i in range(len(shapes)))]
    names_out = [FULL_OUTPUT, *(STREAM_STATE_OUT.format(i) for i in range(len(shapes)))]
    meta = {**_chain_metadata(KIND_STREAM, codec, denoiser, chain, info, checkpoint),
            "stream_lag": graph.lag, "end_unknown": END_UNKNOWN,
            "stream_states": [{"input": STREAM_STATE_IN.format(i),
                               "output": STREAM_STATE_OUT.format(i),
                               "shape": [BATCH_AXIS, *shape[1:]]}
                              for i, shape in enumerate(shapes)]}
    rng = np.random.default_rng(VERIFY_SEED)
    wave = (VERIFY_AMPLITUDE * rng.standard_normal(
        (VERIFY_BATCH, round(VERIFY_STREAM_S * codec.sample_rate) // hop * hop))
            ).astype(np.float32)
    batch = torch.export.Dim("batch", max=MAX_BATCH)
    dynamic = ({0: batch, 1: hop * torch.export.Dim("frames", min=1)}, None, None,
               tuple({0: batch} for _ in shapes))
    args = (torch.from_numpy(wave[:, :EXPORT_FRAMES * hop].copy()), torch.tensor(0),
            torch.tensor(END_UNKNOWN), *graph.initial_state(VERIFY_BATCH))

    def steps() -> Iterator[tuple[np.ndarray, int, int]]:
        """(wave, position, end) of each verification step: the stream, then its end."""
        position, i = 0, 0
        while position < wave.shape[1]:
            n = VERIFY_STEP_HOPS[i % len(VERIFY_STEP_HOPS)] * hop
            yield wave[:, position:position + n], position, END_UNKNOWN
            position, i = position + min(n, wave.shape[1] - position), i + 1
        yield (np.zeros((VERIFY_BATCH, tail_samples(graph.lag, hop)), np.float32), position,
               wave.shape[1])

    def check(tmp: Path, report: ExportReport) -> None:
        session = onnx_session(tmp)
        torch_state = graph.initial_state(VERIFY_BATCH)
        onnx_state = [t.numpy() for t in torch_state]
        worst, snr, count = 0.0, float("inf"), 0
        for x, position, end in steps():
            with torch.no_grad():
                ref, *torch_state = graph(torch.from_numpy(x), position, end, *torch_state)
            got, *onnx_state = session.run(names_out, stream_feed(position, end, x,
                                                                   onnx_state))
            ref = ref.numpy()
            diff = float(np.max(np.abs(got - ref)))
            if not diff <= STREAM_MAX_ABS:
                raise ExportError(f"{path}: onnxruntime differs from torch by {diff:.3g} (max "
                                  f"abs, goal ≤ {STREAM_MAX_ABS}) in the step at sample "
                                  f"{position}")
            worst, snr, count = max(worst, diff), min(snr, snr_db(ref, got)), count + 1
        report.max_abs_diff, report.snr_db = worst, snr
        report.checks.append(f"{count} steps over a {VERIFY_STREAM_S:g} s stream and its end")

    def write(tmp: Path) -> None:
        _export(graph, args, (names_in, names_out), dynamic, meta, tmp, Path(path),
                conv2d=True)

    return _publish_checked(path, KIND_STREAM, write, check)


# --- the stage as the command line runs it ----------------------------------------------------


def run_export(checkpoint: str | Path, output: str | Path, full: bool = False,
               conf: str | Path | None = None, overrides: Sequence[str] = (),
               streaming: bool = False) -> ExportReport:
    """``cleancodec export``: the checkpoint's denoiser, or with ``full`` the whole graph with
    the codec of the profile's ``codec`` section (``overrides``: ``codec.key=value`` /
    ``denoise.key=value`` items); ``streaming`` (with ``full``) writes it as a streaming step
    (:func:`export_streaming`)."""
    if streaming and not full:
        raise ExportError("--streaming exports the whole chain: add --full")
    from cleancodec.core.codec import CodecConfig
    from cleancodec.core.config import load_section
    from cleancodec.infer.denoise import DenoiseConfig, load_enhancer
    from cleancodec.trainer.checkpoint import load_denoiser

    if Path(output).is_dir():
        raise ExportError(f"{output}: is a folder; give the .onnx file to write")
    if not full:
        denoiser, info = load_denoiser(checkpoint)
        return export_denoiser(denoiser, output, info, checkpoint)
    codec_cfg = load_section(conf, "codec", CodecConfig, overrides)
    codec_cfg.device = "cpu"
    cfg = load_section(conf, "denoise", DenoiseConfig, overrides)
    cfg.checkpoint, cfg.bypass = str(checkpoint), False
    enhancer = load_enhancer(cfg, codec_cfg)
    export = export_streaming if streaming else export_full
    return export(enhancer.codec, enhancer.denoiser, output, enhancer.info, checkpoint)


__all__ = ["CONV2D_MIN_CHANNELS", "DENOISER_MAX_ABS", "EnhanceGraph", "ExportError",
           "ExportReport", "FULL_MIN_SNR_DB", "STREAM_MAX_ABS", "conv1d_as_conv2d",
           "export_denoiser", "export_full", "export_streaming", "onnx_session", "read_metadata",
           "run_export", "stream_feed"]

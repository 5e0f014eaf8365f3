"""The streaming step of the whole chain, built from the loaded torch modules: every layer
keeps its own state, so a block costs its own compute (not a forward over ``context + block +
lookahead`` like :mod:`infer.stream`'s windowed streamer).

The modules are walked and each layer is wrapped in a streaming counterpart
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
- The quantizer's out-projections are folded into the decoder's first convolution
  (:func:`fold_projections`): a step reads that layer's weight for a few frames, and folded it
  is about a tenth of the size.

The lags add up to the lookahead that :mod:`infer.receptive` computes, so the latency is the
windowed streamer's (``block + lookahead``). Offline processing pads every layer's input with
zeros; a stream starts from states of zeros and ends (``flush``) by running zeros through the
chain with the signal's length given, and each layer zeroes its inputs outside the signal
before reading them. The output is therefore offline processing
(:func:`infer.denoise.enhance_whole`) to float rounding, delayed by the latency.

The whole chain is one ``nn.Module``, :class:`StepGraph`: ``(wave, position, end, *state) →
(enhanced, *state)``, which :mod:`infer.stateful` runs block by block in torch and
``cleancodec export --full --streaming`` writes as an ONNX graph with its state as inputs and
outputs.

Denoisers with ``grn: global`` (and the seed architecture) normalise over the whole sequence:
no finite state reproduces them, and they are refused (:class:`~infer.stream.StreamError`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cleancodec.core.codec import is_snake
from cleancodec.infer.stream import StreamError
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
    DAC-16k took 3 % less with 2 threads (2026-12-03, 47 interleaved pairs, 96 % faster).

    ``projections=True``: instead of the quantized latents ``Σ_i out_proj_i(v_i)``, the
    inputs of the out-projections and a constant channel, ``[v_1; …; v_n; 1]`` (``[B x (d·n +
    1) x T]``), for a convolution with the projections folded in (:func:`fold_projections`).
    """

    def __init__(self, quantizer: nn.Module, n_codebooks: int, projections: bool = False):
        super().__init__()
        self.quantizers = quantizer.quantizers[:n_codebooks]
        self.projections = projections
        for i, vq in enumerate(self.quantizers):  # as dac's decode_latents normalises them
            normalized = F.normalize(vq.codebook.weight.detach())  # [N x d]
            self.register_buffer(f"codebook_t_{i}", normalized.t(), persistent=False)
            self.register_buffer(f"codebook_sq_{i}", normalized.pow(2).sum(1, keepdim=True).t(),
                                 persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        b, _, n = z.shape
        zq, residual, inputs = None, z, []
        last = len(self.quantizers) - 1
        for i, vq in enumerate(self.quantizers):
            z_e = vq.in_proj(residual)  # [B x d x n]
            encodings = F.normalize(z_e.transpose(1, 2).reshape(b * n, -1))  # [(B·n) x d]
            dist = (encodings.pow(2).sum(1, keepdim=True)
                    - 2 * encodings @ getattr(self, f"codebook_t_{i}")
                    + getattr(self, f"codebook_sq_{i}"))  # [(B·n) x N]
            codes = F.embedding((-dist).max(1)[1], vq.codebook.weight)  # [(B·n) x d]
            z_q = codes.view(b, n, -1).transpose(1, 2)
            v = z_e + (z_q - z_e)  # dac's straight-through sum, as it computes it
            if self.projections:
                inputs.append(v)
                if i == last:  # the last residual is not needed
                    break
            z_q = vq.out_proj(v)
            if not self.projections:  # the folded convolution sums the projections itself
                zq = z_q if zq is None else zq + z_q
            residual = residual - z_q
        if self.projections:
            return torch.cat([*inputs, torch.ones_like(z[:, :1])], dim=1)
        return zq


def fold_projections(conv: nn.Conv1d, quantizers: nn.ModuleList) -> nn.Conv1d:
    """``conv`` applied to ``Σ_i out_proj_i(v_i)`` as one convolution of ``[v_1; …; v_n; 1]``
    (``[B x (d·n + 1) x T]``; the constant channel carries the projections' biases and is zero
    where ``conv`` pads with zeros, as the latents are). Its weight, ``conv.weight ·
    [P_1 … P_n | Σ b_i]``, is computed in float64: about a tenth of the size of ``conv``'s
    (DAC-16k's decoder: 4 MB against 44 MB), so a step of a few frames, which reads every
    weight once, reads less. Equal to the unfolded form to float rounding (tested)."""
    proj = [vq.out_proj for vq in quantizers]
    basis = torch.cat([*(p.weight.detach()[..., 0] for p in proj),  # [D x d] each
                       sum(p.bias.detach() for p in proj)[:, None]], dim=1)  # [D x (d·n + 1)]
    weight = torch.einsum("oik,ij->ojk", conv.weight.detach().double(), basis.double())
    folded = nn.Conv1d(basis.shape[1], conv.out_channels, conv.kernel_size[0],
                       stride=conv.stride[0], padding=conv.padding[0],
                       dilation=conv.dilation[0], bias=conv.bias is not None,
                       device=conv.weight.device)
    with torch.no_grad():
        folded.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is not None:
            folded.bias.copy_(conv.bias)
    return folded.requires_grad_(False)


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
                     contextlib.nullcontext), fold: bool = True):
        super().__init__()
        stages = [_Stage(stream_layer(codec_model.encoder), autocast)]
        if denoiser is not None:
            stages.append(_Stage(stream_denoiser(denoiser), autocast))
        decoder = stream_layer(codec_model.decoder)
        first = decoder.layers[0] if isinstance(decoder, StreamSequential) else None
        fold = (fold and isinstance(first, StreamConv1d) and first.conv.groups == 1
                and all(vq.out_proj.kernel_size == (1,) and vq.out_proj.bias is not None
                        for vq in codec_model.quantizer.quantizers))
        quantize = _Quantize(codec_model.quantizer, n_codebooks, projections=fold)
        if fold:
            decoder.layers[0] = StreamConv1d(fold_projections(first.conv, quantize.quantizers))
        stages += [_Stage(Pointwise(quantize), autocast), _Stage(decoder, autocast)]
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


__all__ = ["END_UNKNOWN", "StepGraph", "stream_denoiser", "stream_layer", "tail_samples"]

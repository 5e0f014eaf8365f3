"""The streaming counterparts of single layers, as fixed-lag step functions (see
:mod:`cleancodec.infer.step_graph` for how a chain of them streams and is exported to ONNX).

Every layer is an ``nn.Module`` whose :meth:`StepLayer.step` takes the next ``n`` samples
``x: Tensor[B x C x n]`` of its input (``n`` any whole number of the chain's hops), the layer's
state tensors, and :class:`At` — the position of ``x[..., 0]`` on the layer's input time axis
and the input's length when it is known — and returns exactly ``n · rate`` output samples, the
new state tensors and the output's :class:`At`. Each layer emits the latest outputs its inputs
determine, so its output lags its input by a fixed number of samples (:meth:`StepLayer.bind`
computes it from the lag of the layer's input). State shapes are fixed: they depend on the
kernels, not on ``n``. The weights are the loaded module's own, called with the same functional
op.

Offline processing pads each layer's input with zeros on both sides. A stream starts with
state of zeros and runs on past the signal's end on zeros, so every layer that reads
neighbouring samples first zeroes its inputs outside ``[0, end)``: what it then reads is what
the offline layer reads. ``At`` holds Python ints when torch runs the step eagerly or traces
it (the check is then skipped where every sample is inside the signal; a trace refuses to meet
an edge) and int64 scalars in an exported graph.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cleancodec.infer.stream import StreamError

TIME = -1  # the time axis of every streamed tensor ([B x C x T])
# Eager torch computes a convolution with at most this many outputs as one matrix product,
# weight [C_out x C_in·k] @ unfolded input: for the few frames of a short block, F.conv1d took
# 2-7x longer on DAC-16k's wide layers (1 thread, 2026-12-02: 1024→1536 channels, kernel 7, 5
# outputs: 19 ms against 5.6 ms), and MKL reads the weight faster in this orientation than as
# input @ weightᵀ (same layer: 6.1 against 8.6 ms). Up to 512 outputs (the 2 kHz layers of a
# 100 or 200 ms block) the product still paid: a 100 ms step of DAC-16k took 3 % less than
# with 128 (2026-12-03, 1 and 2 threads, 37 interleaved pairs); matrix products for every
# convolution cost 3 % more at 200 ms. Exported graphs keep the convolution.
MATMUL_MAX_OUTPUTS = 512
# A weight of at least BLOCKED_MIN_BYTES times 2 … BLOCKED_MAX_COLUMNS columns (the frames of
# a short block) is multiplied in blocks of BLOCKED_ROWS output rows, as one batched product
# (``bmm``): MKL reads the weight about 1.5 times as fast there as in one GEMM (2026-12-03,
# weights out of cache, 2 threads: DAC-16k's widest layers at 5 columns 12.9 → 8.2 ms, at 40
# columns 20.7 → 13.9 ms; the same with 1 thread). A 100 ms step of DAC-16k took 12 % less
# with 2 threads, 10 % less with 1 (40 interleaved pairs). One column is a matrix-vector
# product, faster as it is; smaller weights, and 56 columns or more, gained nothing or lost.
BLOCKED_ROWS = 16
BLOCKED_MAX_COLUMNS = 48
BLOCKED_MIN_BYTES = 2 ** 20
Index = int | Tensor  # a position on a time axis: Python int (eager, traced) or int64 (export)


class At(NamedTuple):
    """Where a block of samples sits: ``pos``, the index of its first sample on its time axis
    (negative before the signal starts); ``end``, the signal's length on that axis (a bound
    larger than any position while the stream runs)."""

    pos: Index
    end: Index


def inside(x: Tensor, at: At) -> Tensor:
    """``x[B x C x n]`` with the samples outside ``[0, at.end)`` set to zero."""
    n = x.shape[TIME]
    if isinstance(at.pos, int) and isinstance(at.end, int) and 0 <= at.pos <= at.end - n:
        return x
    _refuse_traced_edge()
    t = torch.arange(n, device=x.device) + at.pos
    return x * ((t >= 0) & (t < at.end)).to(x.dtype)


def _refuse_traced_edge() -> None:
    """A traced step holds Python-int positions as constants: it is valid at later positions
    only if none of its layers met the signal's edge."""
    if torch.jit.is_tracing():
        raise StreamError("a step traced at an edge of the signal would keep that edge's masks; "
                          "trace it at a position inside the signal")


def _floor_div(a: Index, b: int) -> Index:
    return a // b if isinstance(a, int) else torch.div(a, b, rounding_mode="floor")


class StepLayer(nn.Module):
    """One layer with state (see module docstring)."""

    def bind(self, lag: int) -> int:
        """Fix the layer's timing for an input that lags the stream by ``lag`` samples of this
        layer's input; return the output's lag (in output samples)."""
        raise NotImplementedError

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The shapes of the state tensors (after :meth:`bind`), in :meth:`step`'s order."""
        return []

    def step(self, x: Tensor, at: At, state: Iterator[Tensor],
             new_state: list[Tensor]) -> tuple[Tensor, At]:
        """Take ``x`` (at ``at``) and this layer's tensors from ``state``; append the new ones
        to ``new_state``; return the output and where it sits."""
        raise NotImplementedError


class Pointwise(StepLayer):
    """A per-sample (per-frame) function: no state, no delay."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def bind(self, lag: int) -> int:
        return lag

    def step(self, x, at, state, new_state):
        return self.fn(x), at


class ChannelsLast(nn.Module):
    """Modules that take ``[B x T x C]`` (LayerNorm, Linear…) in order, on ``[B x C x T]``."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.transpose(1, 2)).transpose(1, 2)


def _refuse_hooks(module: nn.Module) -> None:
    if module._forward_pre_hooks:
        raise StreamError(f"{type(module).__name__}: forward pre-hooks (weight norm not folded) "
                          "are not supported; load the codec through cleancodec.core.codec, "
                          "which folds weight norm")


class StreamConv1d(StepLayer):
    """A zero-padded ``Conv1d`` (kernel k, stride s, dilation d, padding p): output j reads
    inputs ``j·s − p … j·s − p + d(k − 1)``. It keeps the inputs its next outputs still read
    (``keep`` ≥ ``d(k − 1) + 1 − s`` samples, rounded so its outputs fall on the offline grid)
    and emits every output whose last input has arrived."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        _refuse_hooks(conv)
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise StreamError(f"Conv1d with padding {conv.padding!r} / mode "
                              f"{conv.padding_mode!r}: only numeric zero padding streams")
        self.conv = conv
        self.stride, self.dilation = conv.stride[0], conv.dilation[0]
        self.pad = conv.padding[0]
        self.span = self.dilation * (conv.kernel_size[0] - 1) + 1
        if self.span < self.stride:
            raise StreamError(f"Conv1d whose stride {self.stride} exceeds its span {self.span} "
                              "(inputs it never reads) does not stream")
        self.keep = 0
        self.matmul_max_outputs = MATMUL_MAX_OUTPUTS if conv.groups == 1 else 0

    def bind(self, lag: int) -> int:
        # the stream's first block starts at input position -lag; its first output is the
        # first whose last input is in it (in whole strides: pos + lag is a multiple of s)
        first = (-lag + self.pad - self.span) // self.stride + 1
        self.keep = -lag + self.pad - first * self.stride
        self.lag_in, self.lag_out = lag, -first
        return self.lag_out

    def state_shapes(self, batch):
        return [(batch, self.conv.in_channels, self.keep)] if self.keep else []

    def step(self, x, at, state, new_state):
        c = self.conv
        if self.keep:
            x = torch.cat([next(state).to(x.dtype), inside(x, at)], dim=TIME)
            new_state.append(x[..., x.shape[TIME] - self.keep:])
        elif self.pad:
            x = inside(x, at)
        outputs = (x.shape[TIME] - self.span) // self.stride + 1
        if isinstance(at.pos, int) and outputs <= self.matmul_max_outputs:  # eager or traced
            y = self._matmul(x, outputs)
        else:
            y = F.conv1d(x, c.weight, c.bias, self.stride, 0, self.dilation, c.groups)
        if self.stride == 1:  # one addition each (an exported floor division is four nodes)
            return y, At(at.pos + (self.lag_in - self.lag_out),
                         at.end + (2 * self.pad - self.span + 1))
        pos = _floor_div(at.pos + self.lag_in, self.stride) - self.lag_out
        end = _floor_div(at.end + 2 * self.pad - self.span, self.stride) + 1
        return y, At(pos, end)

    def _matmul(self, x: Tensor, outputs: int) -> Tensor:
        """The convolution (groups 1) as ``[C_out x C_in·k] @ [C_in·k x B·outputs]``."""
        w = self.conv.weight
        b = x.shape[0]
        cols = x.unfold(TIME, self.span, self.stride)[..., ::self.dilation]  # [B x C x m x k]
        cols = cols.permute(1, 3, 0, 2).reshape(-1, b * outputs)  # [C·k x B·m]
        y = weight_product(w.reshape(w.shape[0], -1), cols, self.conv.bias)  # [C_out x B·m]
        return y.view(-1, b, outputs).transpose(0, 1)


def weight_product(weight: Tensor, cols: Tensor, bias: Tensor | None = None) -> Tensor:
    """``weight [M x K] @ cols [K x N] (+ bias [M])`` → ``[M x N]``; for a few columns and a
    large weight, in blocks of :data:`BLOCKED_ROWS` rows (see there). Eager torch, or a trace
    of one block size: an exported graph (any size) would keep the traced column count's
    block layout."""
    m, k = weight.shape
    n = cols.shape[1]
    if (2 <= n <= BLOCKED_MAX_COLUMNS and m % BLOCKED_ROWS == 0
            and weight.numel() * weight.element_size() >= BLOCKED_MIN_BYTES):
        blocks = m // BLOCKED_ROWS
        w = weight.reshape(blocks, BLOCKED_ROWS, k)
        x = cols.expand(blocks, k, n)
        y = (torch.bmm(w, x) if bias is None
             else torch.baddbmm(bias.reshape(blocks, BLOCKED_ROWS, 1), w, x))
        return y.view(m, n)
    return weight @ cols if bias is None else torch.addmm(bias[:, None], weight, cols)


class StreamConvTranspose1d(StepLayer):
    """A ``ConvTranspose1d`` (groups 1, dilation 1), the last ``overlap`` input frames as state;
    in eager torch a convolution over its input frames (polyphase form), one matrix product
    per step.

    Input frame i writes full-output positions ``i·s … i·s + k − 1``, so output block j
    (positions ``j·s … j·s + s − 1``) is a sum over frames ``j − o … j`` (o = ``overlap``,
    the later blocks of s a frame writes) and is final once frame j is in. With the kernel
    zero-padded to ``(o + 1)·s`` and cut into blocks of s, block j is
    ``G @ [x_{j−o}; …; x_j]`` for one matrix ``G [C_out·s x C_in·(o + 1)]``: the module's
    weight rearranged once (:func:`polyphase_weight`). For the few frames of a short block the
    product is bound by reading the weight, and MKL reads G about 1.5 times as fast as the
    weight as stored (DAC-16k's first upsampling, 5 frames, 1 and 2 threads, 2026-12-02:
    19 → 13 ms and 13 → 8.6 ms). The module's output is the full output without its first and
    last ``p`` positions.

    An exported step instead runs the module's own op over the ``o`` kept frames and the block
    and keeps the blocks that are final: onnxruntime's ``ConvTranspose`` spared the
    rearrangement of the product's output (a 100 ms step of DAC-16k 4 % faster with 2
    threads, 3 % with 1; 2026-12-03, 40 interleaved pairs).
    """

    def __init__(self, conv: nn.ConvTranspose1d):
        super().__init__()
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
        self.overlap = -(-self.kernel // self.stride) - 1
        self.register_buffer("polyphase", polyphase_weight(conv), persistent=False)

    def bind(self, lag: int) -> int:
        self.lag_in, self.lag_out = lag, lag * self.stride + self.pad
        return self.lag_out

    def state_shapes(self, batch):
        return [(batch, self.conv.in_channels, self.overlap)] if self.overlap else []

    def step(self, x, at, state, new_state):
        s, o = self.stride, self.overlap
        b, n = x.shape[0], x.shape[TIME]
        x = inside(x, at)
        if o:
            x = torch.cat([next(state).to(x.dtype), x], dim=TIME)
            new_state.append(x[..., x.shape[TIME] - o:])
        if isinstance(at.pos, int):  # eager or traced
            cols = x.unfold(TIME, o + 1, 1).permute(1, 3, 0, 2).reshape(-1, b * n)
            y = weight_product(self.polyphase, cols)  # [C_out·s x B·n]: block j of channel c
            y = y.view(-1, s, b, n).permute(2, 0, 3, 1).reshape(b, -1, n * s)
            if self.conv.bias is not None:
                y = y + self.conv.bias[:, None]
        else:  # exported: the module's own op over state + block, the blocks that are final
            y = F.conv_transpose1d(x, self.conv.weight, self.conv.bias, s)[..., o * s:(o + n) * s]
        pos = (at.pos + self.lag_in) * s - self.lag_out
        end = (at.end - 1) * s + self.kernel - 2 * self.pad
        return y, At(pos, end)


_POLYPHASE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def polyphase_weight(conv: nn.ConvTranspose1d) -> Tensor:
    """``conv``'s weight ``[C_in x C_out x k]`` as ``G [C_out·s x C_in·(o + 1)]`` with
    ``G[(c, t), (i, r)] = w[i, c, (o − r)·s + t]`` (zero past k): column block r multiplies
    the frame ``o − r`` frames back. One copy per module and weight version, shared by every
    stream built from it (moving the weight's memory, :mod:`infer.arena`, keeps the copy)."""
    w = conv.weight.detach()
    key = (w._version, w.dtype, w.device)
    cached = _POLYPHASE.get(conv)
    if cached is None or cached[0]() is not conv.weight or cached[1] != key:
        s, k = conv.stride[0], conv.kernel_size[0]
        o = -(-k // s) - 1
        blocks = F.pad(w, (0, (o + 1) * s - k)).view(w.shape[0], w.shape[1], o + 1, s)
        g = blocks.flip(2).permute(1, 3, 0, 2).reshape(w.shape[1] * s, -1).contiguous()
        _POLYPHASE[conv] = cached = (weakref.ref(conv.weight), key, g)
    return cached[2]


class StreamSequential(StepLayer):
    """Layers in order."""

    def __init__(self, layers: Sequence[StepLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def bind(self, lag: int) -> int:
        for layer in self.layers:
            lag = layer.bind(lag)
        return lag

    def state_shapes(self, batch):
        return [s for layer in self.layers for s in layer.state_shapes(batch)]

    def step(self, x, at, state, new_state):
        for layer in self.layers:
            x, at = layer.step(x, at, state, new_state)
        return x, at


class StreamResidual(StepLayer):
    """``x + block(x)`` for a length-preserving ``block``: the skip path waits in a FIFO of
    ``delay`` samples (the block's lag) until the block's output for the same samples comes
    out."""

    def __init__(self, block: StepLayer, channels: int):
        super().__init__()
        self.block, self.channels = block, channels
        self.delay = 0

    def bind(self, lag: int) -> int:
        out = self.block.bind(lag)
        self.delay = out - lag
        if self.delay < 0:
            raise StreamError("residual block that leads its input does not stream")
        return out

    def state_shapes(self, batch):
        own = [(batch, self.channels, self.delay)] if self.delay else []
        return own + self.block.state_shapes(batch)

    def step(self, x, at, state, new_state):
        if not self.delay:
            y, out = self.block.step(x, at, state, new_state)
            return x + y, out
        kept = next(state).to(x.dtype)
        if isinstance(at.pos, int) and not torch.is_autocast_enabled(x.device.type):
            return self._add_in_place(x, kept, at, state, new_state)  # eager or traced
        # exported (or under autocast, where the sum takes the wider of the two types):
        # [kept | x] splits into the skip path's samples and the next kept ones (one
        # ``Split``: onnxruntime's two ``Slice`` copies cost 4 % more of a 100 ms DAC-16k step
        # with 2 threads, 3 % with 1; 2026-12-03, 77 / 27 interleaved pairs)
        skip, kept = torch.split(torch.cat([kept, x], dim=TIME), [x.shape[TIME], self.delay],
                                 dim=TIME)
        new_state.append(kept)
        y, out = self.block.step(x, at, state, new_state)
        return skip + y, out

    def _add_in_place(self, x: Tensor, kept: Tensor, at: At, state: Iterator[Tensor],
                      new_state: list[Tensor]) -> tuple[Tensor, At]:
        """The skip samples ``[kept | x][:n]`` added into the block's output where they fall,
        without joining them into one tensor first: a 100 ms step of DAC-16k took 1.6 % less
        with 2 threads (2026-12-04, 100 interleaved pairs, 80 % faster), with the same output
        to the bit. The block's output is its own new tensor (a convolution's, a linear
        layer's); the next kept samples are a view of ``x``, which nothing changes later."""
        n, d = x.shape[TIME], self.delay
        new_state.append(x[..., n - d:] if n >= d else torch.cat([kept[..., n:], x], dim=TIME))
        y, out = self.block.step(x, at, state, new_state)
        if n >= d:
            y[..., :d] += kept
            y[..., d:] += x[..., :n - d]
        else:
            y += kept[..., :n]
        return y, out


class StreamWindowGRN(StepLayer):
    """``GlobalResponseNorm(kind="window")`` streamed: frame i's statistics average ``x²``
    over frames ``i − h … i + h`` (h = window // 2) that lie inside the signal. It keeps the
    last ``2h`` frames and emits the frames whose window has arrived."""

    def __init__(self, grn: nn.Module, channels: int):
        super().__init__()
        self.grn, self.half, self.channels = grn, grn.window // 2, channels

    def bind(self, lag: int) -> int:
        self.lag_in = lag
        return lag + self.half

    def state_shapes(self, batch):
        return [(batch, self.channels, 2 * self.half)] if self.half else []

    def step(self, x, at, state, new_state):
        h, n, window = self.half, x.shape[TIME], self.grn.window
        if h:
            x = torch.cat([next(state).to(x.dtype), inside(x, at)], dim=TIME)
            new_state.append(x[..., x.shape[TIME] - 2 * h:])
        power = F.avg_pool1d(x.float().pow(2), window, stride=1)  # [B x C x n]
        out = At(at.pos - h, at.end)
        if not isinstance(out.pos, int) or out.pos < h or out.pos + n + h > at.end:
            # near an edge: the mean over the frames inside the signal only
            _refuse_traced_edge()
            t = torch.arange(n, device=x.device) + out.pos
            count = (torch.clamp(t + h, max=at.end - 1) - torch.clamp(t - h, min=0) + 1)
            power = power * (window / count.clamp_min(1).to(power.dtype))
        centre = x[..., h:h + n].transpose(1, 2)
        return self.grn.respond(centre, power.transpose(1, 2)).transpose(1, 2), out


__all__ = ["At", "Pointwise", "StepLayer", "StreamConv1d", "StreamConvTranspose1d",
           "StreamResidual", "StreamSequential", "StreamWindowGRN", "ChannelsLast", "inside"]

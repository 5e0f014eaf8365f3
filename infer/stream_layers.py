"""The streaming counterparts of single layers (see :mod:`cleancodec.infer.stateful` for how a
chain of them streams): each keeps the state its next output needs and calls the original
module's weights with the same functional op. ``x: Tensor[B x C x T]`` in and out; ``step``
takes the samples that arrived, ``finish`` ends the stream with the layer's own right padding.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cleancodec.infer.stream import StreamError

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


def channels_last(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
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
        y = channels_last(self.grn)(self.buf)
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

"""Equivalent forms of layers that onnxruntime's CPU provider runs faster (same numbers).

:func:`onnx_friendly` returns a copy of a model with these replacements, used only for export
(``infer.export`` checks the exported graph against the *original* torch model):

- ``nn.Conv1d`` / ``nn.ConvTranspose1d`` → the 2-D convolution over ``[B x C x 1 x T]`` with a
  ``1 x k`` kernel. onnxruntime lays 2-D convolutions out in its blocked channel format
  (its ``NCHWc`` graph transformer, on at the default optimisation level), which runs the DAC
  convolutions faster than its 1-D kernels; the products and sums are the same.
- DAC's upsampling ``nn.ConvTranspose1d`` (kernel twice the stride) → one 2-tap polyphase
  convolution whose phases are interleaved (:class:`ConvTranspose1dPolyphase`).
- DAC's ``Snake1d`` (``x + sin(alpha x)^2 / (alpha + 1e-9)``) → the same expression with
  ``1 / (alpha + 1e-9)`` computed once and the square as a product (``s * s``): exported as
  ``Pow(s, 2)`` it is a generic power in onnxruntime, several times slower than a product.
  Where a convolution follows the Snake, its scales move into the convolutions around it and
  the sine is evaluated with products and sums that onnxruntime spreads over its threads
  (:class:`SnakeScaled`; its ``Sin`` kernel is single-threaded).
- A run of DAC residual units whose channel count is not a multiple of
  :data:`BALANCED_CHANNELS` → the same units over ``ROWS`` overlapping pieces of the time axis
  stacked on the batch axis (:class:`ResidualRows`). onnxruntime's blocked convolution shares
  its work between threads by batch item x set of 64 output channels (4 blocks of 16 with
  AVX-512) x output row; a ``[1 x C x 1 x T]`` convolution with 64 or 192 channels has one or
  three such shares, so with 2 threads one of them idles for all or a third of it. Each piece
  carries the units' receptive field on both sides, so the kept samples are the same sums.
  The Snakes of these runs evaluate one piece at a time, so their passes stay in cache.

``bench/stream.py`` measures onnxruntime against torch on the whole chain.
"""
from __future__ import annotations

import copy
import functools
import math

import numpy as np
import torch
from torch import Tensor, nn

from cleancodec.core.codec import SNAKE_EPS, is_snake

TIME_AXIS_2D = 2  # the height axis of size 1 that the 2-D forms add: [B x C x 1 x T]
SNAKE_R = 2.0 / math.sqrt(math.pi)  # sin(pi f)^2 / pi = h (SNAKE_R - h), h = SNAKE_R sin(pi f/2)^2
SNAKE_DEGREE = 3  # degree of snake_polynomial's p (float32 rounding is reached at 3)
SNAKE_FIT_NODES = 4000  # Chebyshev nodes of the least-squares fit (8000 move it by < 1e-14)


class _As2d(nn.Module):
    """The weights and geometry of a 1-D convolution laid out for its 2-D equivalent over
    ``[B x C x 1 x T]``: kernel ``1 x k``, stride / padding / dilation ``(1 or 0, value)``."""

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach()[:, :, None, :].clone(),
                                   requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
                     if conv.bias is not None else None)
        self.stride, self.padding = (1, conv.stride[0]), (0, conv.padding[0])
        self.dilation, self.groups = (1, conv.dilation[0]), conv.groups


class Conv1dAs2d(_As2d):
    """A ``nn.Conv1d`` (zero padding) run as the equivalent ``conv2d``: ``[B x C x T]`` →
    ``[B x C' x T']``, weights ``[C' x C/groups x 1 x k]``."""

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.conv2d(x.unsqueeze(TIME_AXIS_2D), self.weight, self.bias, self.stride,
                                 self.padding, self.dilation, self.groups)
        return y.squeeze(TIME_AXIS_2D)


class ConvTranspose1dAs2d(_As2d):
    """A ``nn.ConvTranspose1d`` run as the equivalent ``conv_transpose2d``."""

    def __init__(self, conv: nn.ConvTranspose1d):
        super().__init__(conv)
        self.output_padding = (0, conv.output_padding[0])

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.conv_transpose2d(x.unsqueeze(TIME_AXIS_2D), self.weight, self.bias,
                                           self.stride, self.padding, self.output_padding,
                                           self.groups, self.dilation)
        return y.squeeze(TIME_AXIS_2D)


class ConvTranspose1dPolyphase(nn.Module):
    """A ``nn.ConvTranspose1d`` whose kernel is twice its stride ``s`` (DAC's upsampling
    layers), run as an ordinary convolution: output sample ``s j + r`` (before cropping the
    padding) is ``W[:, :, r]^T x[j] + W[:, :, r + s]^T x[j - 1]``, so one 2-tap convolution
    with ``s C_out`` output channels (one group per phase ``r``) followed by interleaving the
    phases gives the same sums. onnxruntime runs it in its blocked 2-D convolution."""

    def __init__(self, conv: nn.ConvTranspose1d):
        super().__init__()
        stride = conv.stride[0]
        w = conv.weight.detach()                      # [C_in x C_out x 2s]
        c_in, c_out, _ = w.shape
        taps = torch.stack([w[:, :, stride:], w[:, :, :stride]], dim=-1)  # [C_in x C_out x s x 2]
        poly = taps.permute(2, 1, 0, 3).reshape(stride * c_out, c_in, 1, 2)
        self.weight = nn.Parameter(poly.contiguous(), requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone()[None, :, None], requires_grad=False)
                     if conv.bias is not None else None)
        self.stride, self.c_out, self.crop = stride, c_out, conv.padding[0]

    @staticmethod
    def applies(conv: nn.ConvTranspose1d) -> bool:
        return (conv.kernel_size[0] == 2 * conv.stride[0] and conv.groups == 1
                and conv.dilation[0] == 1 and conv.output_padding[0] == 0)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t = x.shape
        y = nn.functional.conv2d(x.unsqueeze(TIME_AXIS_2D), self.weight, None, 1, (0, 1))
        y = y.reshape(b, self.stride, self.c_out, t + 1).permute(0, 2, 3, 1)
        y = y.reshape(b, self.c_out, (t + 1) * self.stride)
        y = y[:, :, self.crop:(t + 1) * self.stride - self.crop]
        return y + self.bias if self.bias is not None else y


# The residual units of a run whose channels are a multiple of this already give onnxruntime's
# convolution an even number of 64-channel shares (two per 128 channels; AVX2 shares are 32).
BALANCED_CHANNELS = 128
# Pieces of the time axis a ResidualRows splits into: an even share count for 1, 2 or 4 threads.
ROWS = 4


def _same_conv_padding(conv: nn.Module) -> int | None:
    """The one-sided padding of a stride-1 ``nn.Conv1d`` whose output is as long as its input
    (``2 padding = dilation (kernel - 1)``), None for any other layer."""
    if type(conv) is not nn.Conv1d or conv.stride[0] != 1 or isinstance(conv.padding, str) \
            or conv.padding_mode != "zeros":
        return None
    pad = conv.padding[0]
    return pad if 2 * pad == conv.dilation[0] * (conv.kernel_size[0] - 1) else None


def residual_halo(unit: nn.Module) -> int | None:
    """Samples one DAC ``ResidualUnit`` (``x + block(x)``, ``block`` a sequence of Snakes and
    same-length convolutions) reads on each side of an output sample; None if ``unit`` is not
    such a unit."""
    block = getattr(unit, "block", None)
    if type(unit).__name__ != "ResidualUnit" or not isinstance(block, nn.Sequential):
        return None
    halo = 0
    for layer in block:
        if is_snake(layer):
            continue
        pad = _same_conv_padding(layer)
        if pad is None:
            return None
        halo += pad
    return halo


class ResidualRows(nn.Module):
    """A run of DAC residual units over ``rows`` overlapping pieces of the time axis.

    ``x: [B x C x T]`` is zero-padded and cut into ``rows`` pieces of ``W = ceil(T / rows)``
    samples, each with ``halo`` samples (the run's receptive field on one side) from its
    neighbours, stacked as ``[B·rows x C x W + 2 halo]``. The units run on that batch; after
    each but the last, samples outside ``[0, T)`` are set to zero again, which is what the
    units' own zero padding sees at the ends of the whole signal (the last unit's samples there
    are cut off). The middle ``W`` samples of every piece are then the run's output on ``x``
    and are put back in order: ``[B x C x T]``.

    The convolutions need the whole batch (that is what balances their work shares); the Snakes
    between them need no neighbours, so :meth:`snakes_by_piece` has them evaluate one piece at
    a time.
    """

    def __init__(self, units: list[nn.Module], halo: int, rows: int = ROWS):
        super().__init__()
        self.units = nn.ModuleList(units)
        self.halo, self.rows = halo, rows

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        r, h = self.rows, self.halo
        w = (t + r - 1) // r
        length = w + 2 * h
        padded = nn.functional.pad(x, (h, r * w - t + h))
        y = torch.stack([padded[:, :, i * w: i * w + length] for i in range(r)], dim=1)
        y = y.reshape(b * r, c, length)
        position = (torch.arange(length, device=x.device)[None, :]
                    + (torch.arange(r, device=x.device) * w - h)[:, None])  # [rows x L]
        inside = ((position >= 0) & (position < t)).to(x.dtype)[:, None, :]
        inside = inside.expand(b, r, 1, length).reshape(b * r, 1, length)
        for i, unit in enumerate(self.units):
            y = unit(y)
            if i + 1 < len(self.units):  # the last unit's samples outside [0, T) are cut off
                y = y * inside
        y = y[:, :, h: h + w].reshape(b, r, c, w).permute(0, 2, 1, 3).reshape(b, c, r * w)
        return y[:, :, :t]

    def snakes_by_piece(self) -> None:
        """Have every :class:`SnakeScaled` in the units evaluate its products and sums on one
        piece after the other (``pieces = rows``). Each of its 13 elementwise nodes is a pass
        over memory in onnxruntime; on a 2 s window a whole batch of the 96- or 192-channel
        runs is 12 MB, and the passes over it ran at about half the speed of passes over a
        piece, which stays in the processor's cache. With 2 threads the whole 2 s window took
        3-4 % less, a 1 s window 0-3 % more (four times the nodes; 2026-12-01)."""
        for module in self.units.modules():
            if isinstance(module, SnakeScaled):
                module.pieces = self.rows


def _unit_channels(unit: nn.Module) -> int:
    return next(layer.out_channels for layer in unit.block if not is_snake(layer))


def _split_residual_runs(seq: nn.Sequential) -> int:
    """Within ``seq``, put each run of consecutive residual units (see :func:`residual_halo`)
    whose channels are not a multiple of :data:`BALANCED_CHANNELS` into one
    :class:`ResidualRows`. Returns how many runs were rewritten."""
    runs, current = [], []
    for i, module in enumerate(seq):
        halo = residual_halo(module)
        if halo is not None and _unit_channels(module) % BALANCED_CHANNELS:
            current.append((i, halo))
            continue
        if current:
            runs.append(current)
        current = []
    if current:
        runs.append(current)
    for run in reversed(runs):
        first, last = run[0][0], run[-1][0]
        units = [seq[i] for i, _ in run]
        seq[first] = ResidualRows(units, sum(h for _, h in run))
        for i in range(last, first, -1):
            del seq[i]
    return len(runs)


class SnakeProduct(nn.Module):
    """DAC's Snake activation, ``x + sin(alpha x)^2 / (alpha + 1e-9)`` for ``x: [B x C x T]``,
    ``alpha: [1 x C x 1]``, with the reciprocal precomputed and the square as a product."""

    def __init__(self, alpha: Tensor):
        super().__init__()
        alpha = alpha.detach().clone()
        self.register_buffer("alpha", alpha)
        self.register_buffer("inv_alpha", (alpha + SNAKE_EPS).reciprocal())

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sin(self.alpha * x)
        return s * s * self.inv_alpha + x


@functools.cache
def snake_polynomial() -> tuple[float, ...]:
    """Coefficients ``p`` of ``h(v) = v (p0 + p1 v + p2 v^2 + p3 v^3)``, ``v = f^2``, fitted to
    ``r sin(pi f / 2)^2`` (``r = 2 / sqrt(pi)``) for ``f`` in [-1/2, 1/2]: by
    ``sin(2y)^2 = 4 sin(y)^2 (1 - sin(y)^2)``, ``sin(pi f)^2 / pi = h (r - h)``. Least squares
    in ``h / v`` on Chebyshev nodes of ``v`` in [0, 1/4]; in float32 the result is within
    8e-8 of ``sin(pi f)^2 / pi`` (tested)."""
    k = np.arange(SNAKE_FIT_NODES)
    v = 0.125 - 0.125 * np.cos(np.pi * (k + 0.5) / SNAKE_FIT_NODES)
    target = SNAKE_R * np.sin(np.pi * np.sqrt(v) / 2) ** 2 / v
    powers = np.stack([v ** j for j in range(SNAKE_DEGREE + 1)], axis=1)
    return tuple(float(c) for c in np.linalg.lstsq(powers, target, rcond=None)[0])


class SnakeScaled(nn.Module):
    """DAC's Snake with its scales moved into the convolutions around it, evaluated with
    arithmetic only: ``x: [B x C x T]`` → ``t + sin(pi t)^2 / pi`` with ``t = x alpha / pi``
    (``alpha`` None: the convolution before it already scaled its output channels by
    ``alpha / pi``, so ``t`` is its input). The convolution after it multiplies by
    ``pi / (alpha + 1e-9)``, which gives back ``x + sin(alpha x)^2 / (alpha + 1e-9)``.

    The sine goes through :func:`snake_polynomial` after reducing ``t`` to ``f = t - round(t)``
    (``sin(pi t)^2`` has period 1): 13 elementwise products and sums, which onnxruntime runs
    on all its threads, where its ``Sin`` kernel runs on one (3.9 ms against 0.15 ms for a
    product over [1 x 64 x 31360] with 2 threads, 2026-12-01). The result is that of the sine
    to about one float32 rounding of the output (tested).

    ``pieces > 1``: the batch axis holds ``pieces`` consecutive pieces of each item (``x:
    [B·pieces x C x T]``, as in :class:`ResidualRows`), and the expression is evaluated on one
    piece after the other, so that each piece's passes stay in cache; same values.
    """

    def __init__(self, alpha: Tensor | None, pieces: int = 1):
        super().__init__()
        self.scale = None if alpha is None else nn.Parameter(alpha.detach().clone() / math.pi,
                                                             requires_grad=False)
        self.coefficients = snake_polynomial()
        self.pieces = pieces

    def forward(self, x: Tensor) -> Tensor:
        if self.pieces == 1:
            return self._value(x)
        n, c, length = x.shape
        parts = x.reshape(n // self.pieces, self.pieces, c, length)
        out = torch.stack([self._value(parts[:, i]) for i in range(self.pieces)], dim=1)
        return out.reshape(n, c, length)

    def _value(self, x: Tensor) -> Tensor:
        t = x if self.scale is None else self.scale * x
        f = t - torch.round(t)
        v = f * f
        p0, p1, p2, p3 = self.coefficients
        h = ((v * p3 + p2) * v + p1) * v + p0
        h = h * v
        return t + h * (SNAKE_R - h)


# A Snake's scale is moved into its neighbours only when every |alpha| is at least this: the
# move multiplies by alpha / pi and later by pi / (alpha + 1e-9), which is exact up to float
# rounding for such alphas and would lose the identity term for alpha = 0.
MIN_FOLD_ALPHA = 1e-3


def _plain(module: nn.Module, *types: type) -> bool:
    """``module`` is exactly one of ``types``, with no parametrisation hook and one group."""
    return (type(module) in types and not module._forward_pre_hooks
            and module.groups == 1 and module.padding_mode == "zeros")


def _snake_alpha(module: nn.Module) -> Tensor | None:
    return module.alpha.detach() if is_snake(module) else None


@torch.no_grad()
def _fold_snakes(seq: nn.Sequential) -> int:
    """Within ``seq`` (each child's output feeds the next child only), turn each Snake followed
    by a convolution into a :class:`SnakeScaled`: ``pi / (alpha + 1e-9)`` moves into the input
    channels of the next convolution, and ``alpha / pi`` into the output channels of the
    previous one when there is one. Returns how many Snakes were rewritten."""
    children = list(seq.children())
    folded = 0
    for i, module in enumerate(children):
        alpha = _snake_alpha(module)
        nxt = children[i + 1] if i + 1 < len(children) else None
        if (alpha is None or nxt is None or not _plain(nxt, nn.Conv1d, nn.ConvTranspose1d)
                or bool((alpha.abs() < MIN_FOLD_ALPHA).any())):
            continue
        a = alpha.reshape(-1)
        inv = math.pi / (a + SNAKE_EPS)
        if type(nxt) is nn.Conv1d:             # weight [C_out x C_in x k]
            nxt.weight.mul_(inv[None, :, None])
        else:                                  # ConvTranspose1d: [C_in x C_out x k]
            nxt.weight.mul_(inv[:, None, None])
        prev = children[i - 1] if i > 0 else None
        if prev is not None and _plain(prev, nn.Conv1d):
            prev.weight.mul_(a[:, None, None] / math.pi)
            if prev.bias is not None:
                prev.bias.mul_(a / math.pi)
            seq[i] = SnakeScaled(None)
        else:
            seq[i] = SnakeScaled(alpha)
        folded += 1
    return folded


# Names of the forms, for :func:`onnx_friendly`'s ``forms`` (``bench/onnx_forms.py`` measures
# each against the plain export).
FORM_CONV2D = "conv2d"            # Conv1d / ConvTranspose1d as 2-D convolutions
FORM_POLYPHASE = "polyphase"      # DAC's upsampling as a polyphase convolution
FORM_SNAKE_PRODUCT = "snake_product"  # Snake with its reciprocal precomputed, square a product
FORM_SNAKE_FOLD = "snake_fold"    # Snake scales into the convolutions, polynomial sine
FORM_ROWS = "rows"                # residual runs over pieces of the time axis (ResidualRows)
FORM_SNAKE_PIECES = "snake_pieces"  # the folded Snakes of those runs one piece at a time
FORMS = frozenset({FORM_CONV2D, FORM_POLYPHASE, FORM_SNAKE_PRODUCT, FORM_SNAKE_FOLD, FORM_ROWS,
                   FORM_SNAKE_PIECES})
# a form that acts only on what another one made
FORM_NEEDS = {FORM_SNAKE_PIECES: frozenset({FORM_ROWS, FORM_SNAKE_FOLD})}


def _replacement(module: nn.Module, forms: frozenset[str]) -> nn.Module | None:
    if type(module) is nn.ConvTranspose1d and module.padding_mode == "zeros":
        if FORM_POLYPHASE in forms and ConvTranspose1dPolyphase.applies(module):
            return ConvTranspose1dPolyphase(module)
        return ConvTranspose1dAs2d(module) if FORM_CONV2D in forms else None
    if FORM_CONV2D in forms and type(module) is nn.Conv1d and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        return Conv1dAs2d(module)
    alpha = _snake_alpha(module) if FORM_SNAKE_PRODUCT in forms else None
    return SnakeProduct(alpha) if alpha is not None else None


def onnx_friendly(model: nn.Module, forms: frozenset[str] | set[str] = FORMS
                  ) -> tuple[nn.Module, int]:
    """A copy of ``model`` (evaluation mode) with the layers above replaced by their
    equivalent forms (``forms``: which ones, a subset of :data:`FORMS`); returns the copy and
    how many layers were replaced. ``model`` itself is not changed. Layers under a weight-norm
    or spectral-norm hook are left as they are (their weight is recomputed on every forward)."""
    forms = frozenset(forms)
    unknown = forms - FORMS
    if unknown:
        raise ValueError(f"unknown ONNX forms {sorted(unknown)}; known: {sorted(FORMS)}")
    for form, needs in FORM_NEEDS.items():
        if form in forms and not needs <= forms:
            raise ValueError(f"ONNX form {form!r} needs {sorted(needs)}")
    clone = copy.deepcopy(model).eval()
    sequences = [m for m in clone.modules() if isinstance(m, nn.Sequential)]
    replaced = sum(_split_residual_runs(seq) for seq in sequences) if FORM_ROWS in forms else 0
    if FORM_SNAKE_FOLD in forms:
        replaced += sum(_fold_snakes(seq) for seq in list(clone.modules())
                        if isinstance(seq, nn.Sequential))
    if FORM_SNAKE_PIECES in forms:
        for rows in [m for m in clone.modules() if isinstance(m, ResidualRows)]:
            rows.snakes_by_piece()
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if child._forward_pre_hooks:  # a parametrisation hook computes its weight
                continue
            new = _replacement(child, forms)
            if new is not None:
                setattr(parent, name, new)
                replaced += 1
    return clone, replaced


__all__ = ["FORMS", "Conv1dAs2d", "ConvTranspose1dAs2d", "ConvTranspose1dPolyphase", "ResidualRows",
           "SnakeProduct", "SnakeScaled", "onnx_friendly", "residual_halo", "snake_polynomial"]

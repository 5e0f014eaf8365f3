"""Receptive field of the enhancement chain, computed from the architectures.

The chain ``encoder → denoiser → quantizer → decoder`` is convolutional: every output sample
depends on a bounded span of input samples, past and future. DAC's encoder and decoder are
chains of ``Conv1d`` / ``ConvTranspose1d`` layers (residual units add their input back, and
every residual convolution is centred, so its span covers the skip path); the quantizer maps
each frame on its own; the denoiser reaches ``Denoiser.receptive_field()`` frames each side.

:func:`input_span` propagates an interval of output positions back through a layer chain
(exact integer arithmetic, no forward pass); :func:`chain_field` composes the three stages into
the samples of context a hop-aligned block of output needs before its first sample and after
its last. Both numbers are independent of the block's length (the chain is shift-invariant by
one hop) and are what ``infer.stream`` feeds with every block. A test checks them against the
gradient of the real modules.

DAC 16 kHz (and the tiny test codec, which has the same kernels and strides), hop 320: the
encoder reaches 2501 samples (156 ms) before a frame and 2493 samples (156 ms) after it; the
decoder needs 10 frames before and 10 after the frame holding an output sample; together a
block needs 5701 samples (356 ms) of past and 5693 samples (356 ms) of future input, plus the
denoiser's frames on each side. Rounded up to whole frames that is 18 frames each side for
the codec alone and 30 frames (600 ms) with the default denoiser (``medium``: depth 4, kernel 7,
``grn: none``, 12 frames each side); file denoising drops that many frames at each inner chunk
edge (:meth:`ChainField.edge_frames`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

SECONDS_PER_MS = 1e-3
# A frame far from position 0, so that every propagated interval stays positive (the result
# does not depend on it: the chain is shift-invariant by one hop)
REFERENCE_FRAME = 10_000
CONV_TYPES = (nn.Conv1d, nn.ConvTranspose1d)


def conv_chain(module: nn.Module) -> list[nn.Module]:
    """The ``Conv1d`` / ``ConvTranspose1d`` layers of ``module`` in registration order (DAC
    registers its layers in forward order)."""
    return [m for m in module.modules() if isinstance(m, CONV_TYPES)]


def input_span(layers: list[nn.Module], first: int, last: int) -> tuple[int, int]:
    """Input positions that can change outputs ``first … last`` (inclusive) of a layer chain.

    ``layers`` run in the given order. For a ``Conv1d`` (kernel k, stride s, padding p,
    dilation d) output i reads inputs ``i·s − p … i·s − p + d(k−1)``; for a ``ConvTranspose1d``
    input i writes outputs ``i·s − p + d·m`` (m = 0 … k−1). Returns ``(first, last)`` at the
    chain's input, unclamped (negative positions mean padding).
    """
    for layer in reversed(layers):
        k, s = layer.kernel_size[0], layer.stride[0]
        p, d = layer.padding[0], layer.dilation[0]
        if isinstance(layer, nn.ConvTranspose1d):
            first, last = -(-(first + p - d * (k - 1)) // s), (last + p) // s
        else:
            first, last = first * s - p, last * s - p + d * (k - 1)
    return first, last


def denoiser_frames(denoiser: nn.Module | None) -> tuple[int, bool]:
    """Frames each side that can change a denoiser output frame, and whether that is exact.

    ``None`` (bypass) reaches 0 frames. A denoiser with ``grn: global`` depends on the whole
    sequence it sees: its convolutions' reach is returned with ``exact = False`` (streamed and
    chunked outputs then only approximate whole-signal processing).
    """
    if denoiser is None:
        return 0, True
    frames = denoiser.receptive_field()
    if frames is not None:
        return int(frames), True
    return int(denoiser.conv_reach()), False


@dataclass(frozen=True)
class ChainField:
    """Receptive field of encoder → denoiser → quantizer → decoder.

    hop: samples per latent frame. encoder_past / encoder_future: input samples before a
    frame's first sample / after its last that change that frame. decoder_past /
    decoder_future: frames before / after the frame holding an output sample that change it.
    denoiser: frames each side (``exact`` False for a global-statistics denoiser).
    context / lookahead: input samples before the first / after the last sample of a
    hop-aligned output block that change the block.
    """

    sample_rate: int
    hop: int
    encoder_past: int
    encoder_future: int
    decoder_past: int
    decoder_future: int
    denoiser: int
    exact: bool
    context: int
    lookahead: int

    def ms(self, samples: int) -> float:
        """``samples`` at this chain's rate in milliseconds."""
        return samples / self.sample_rate / SECONDS_PER_MS

    def context_frames(self) -> int:
        """:attr:`context` rounded up to whole frames."""
        return -(-self.context // self.hop)

    def lookahead_frames(self) -> int:
        """:attr:`lookahead` rounded up to whole frames."""
        return -(-self.lookahead // self.hop)

    def edge_frames(self) -> int:
        """Frames a chunk of a long signal drops at each inner edge (``infer.chunking``): the
        longer of :meth:`context_frames` and :meth:`lookahead_frames`, since an inner edge is
        the past of one chunk's kept part and the future of its neighbour's."""
        return max(self.context_frames(), self.lookahead_frames())

    def describe(self) -> str:
        """One line with the figures in samples and milliseconds."""
        text = (f"encoder {self.encoder_past} samples ({self.ms(self.encoder_past):.0f} ms) "
                f"past / {self.encoder_future} ({self.ms(self.encoder_future):.0f} ms) future of "
                f"a frame; decoder ±{self.decoder_past}/{self.decoder_future} frames; denoiser "
                f"±{self.denoiser} frames; chain {self.context} samples "
                f"({self.ms(self.context):.0f} ms) past, {self.lookahead} samples "
                f"({self.ms(self.lookahead):.0f} ms) future")
        return text if self.exact else text + " (denoiser: global statistics, approximate)"

    def to_dict(self) -> dict[str, int | bool]:
        """Plain values (ONNX metadata, reports)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def chain_field(encoder: nn.Module, decoder: nn.Module, hop: int, sample_rate: int,
                denoiser_reach: int = 0, exact: bool = True) -> ChainField:
    """Compose the encoder's and decoder's conv chains with a denoiser reaching
    ``denoiser_reach`` frames each side (see module docstring)."""
    enc, dec = conv_chain(encoder), conv_chain(decoder)
    f0 = REFERENCE_FRAME
    frame_first, frame_last = f0 * hop, (f0 + 1) * hop - 1
    e_first, e_last = input_span(enc, f0, f0)
    d_first, d_last = input_span(dec, frame_first, frame_last)
    x_first, _ = input_span(enc, d_first - denoiser_reach, d_first - denoiser_reach)
    _, x_last = input_span(enc, d_last + denoiser_reach, d_last + denoiser_reach)
    return ChainField(
        sample_rate=int(sample_rate), hop=int(hop),
        encoder_past=frame_first - e_first, encoder_future=e_last - frame_last,
        decoder_past=f0 - d_first, decoder_future=d_last - f0,
        denoiser=int(denoiser_reach), exact=bool(exact),
        context=frame_first - x_first, lookahead=x_last - frame_last)


def codec_chain_field(codec, denoiser: nn.Module | None) -> ChainField:
    """:func:`chain_field` of a loaded ``pipeline.codec.Codec`` and a denoiser (None: bypass)."""
    reach, exact = denoiser_frames(denoiser)
    if not exact:
        log.warning("the denoiser normalises with global statistics (grn: global): streamed "
                    "output only approximates whole-file output; its convolutions reach "
                    "±%d frames", reach)
    return chain_field(codec.model.encoder, codec.model.decoder, codec.hop_length,
                       codec.sample_rate, reach, exact)


def gradient_span(fn, length: int, first: int, last: int) -> tuple[int, int]:
    """Measured counterpart of :func:`input_span`: the input samples whose gradient on the sum
    of outputs ``first … last`` of ``fn`` (``Tensor[1 x 1 x T] → Tensor[1 x 1 x T']``) is
    non-zero, for a random input of ``length`` samples. For tests and checks."""
    x = (0.1 * torch.randn(1, 1, length)).requires_grad_(True)
    with torch.enable_grad():
        fn(x)[..., first:last + 1].sum().backward()
    nonzero = torch.nonzero(x.grad[0, 0]).flatten()
    return int(nonzero.min()), int(nonzero.max())


__all__ = ["ChainField", "chain_field", "codec_chain_field", "conv_chain", "denoiser_frames",
           "gradient_span", "input_span"]

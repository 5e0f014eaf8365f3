"""infer.onnx_forms: the export-only layer forms compute what the original layers compute."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cleancodec.core.codec import load_codec, prepare_for_inference
from cleancodec.infer.export import EnhanceGraph, onnx_session
from cleancodec.infer.onnx_forms import (
    ROWS,
    Conv1dAs2d,
    ConvTranspose1dAs2d,
    ConvTranspose1dPolyphase,
    ResidualRows,
    SnakeProduct,
    SnakeScaled,
    onnx_friendly,
    residual_halo,
)
from tests.helpers import TINY_CODEC as TINY
from tests.helpers import local_denoiser

TOL = 1e-5  # float32 rounding of sums taken in another order


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max()) or 1.0
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= TOL * scale


@pytest.mark.parametrize("stride, dilation, padding, groups",
                         [(1, 1, 3, 1), (2, 1, 1, 1), (1, 3, 9, 1), (1, 1, 3, 4)])
def test_conv1d_as_2d_equals_conv1d(stride, dilation, padding, groups):
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 12, 7, stride=stride, dilation=dilation, padding=padding, groups=groups)
    x = torch.randn(2, 8, 41)
    with torch.no_grad():
        _close(Conv1dAs2d(conv)(x), conv(x))


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_polyphase_upsampling_equals_the_transposed_convolution(stride):
    """DAC's upsampling layers: kernel 2 x stride, padding ceil(stride / 2)."""
    torch.manual_seed(stride)
    conv = nn.ConvTranspose1d(6, 5, 2 * stride, stride=stride, padding=-(-stride // 2))
    assert ConvTranspose1dPolyphase.applies(conv)
    x = torch.randn(3, 6, 17)
    with torch.no_grad():
        _close(ConvTranspose1dPolyphase(conv)(x), conv(x))
        _close(ConvTranspose1dAs2d(conv)(x), conv(x))


def test_other_transposed_convolutions_are_not_taken_as_polyphase():
    assert not ConvTranspose1dPolyphase.applies(nn.ConvTranspose1d(4, 4, 5, stride=2))
    conv = nn.ConvTranspose1d(4, 3, 5, stride=3, padding=1, output_padding=1)
    x = torch.randn(1, 4, 9)
    with torch.no_grad():
        _close(ConvTranspose1dAs2d(conv)(x), conv(x))


def test_snake_forms_equal_dacs_snake(codec):
    snake_type = next(type(m) for m in codec.model.modules() if type(m).__name__ == "Snake1d")
    snake = snake_type(6)
    with torch.no_grad():
        snake.alpha.copy_(torch.linspace(0.2, 3.0, 6)[None, :, None])
    x = torch.randn(2, 6, 30)
    with torch.no_grad():
        ref = snake(x)
        _close(SnakeProduct(snake.alpha)(x), ref)
        # SnakeScaled leaves pi / alpha to the next layer: multiply it back here
        scaled = SnakeScaled(snake.alpha)(x) * math.pi / (snake.alpha + 1e-9)
        _close(scaled, ref)


def test_the_snakes_polynomial_sine_is_as_close_as_float32_allows():
    """t + sin(pi t)^2 / pi from products and sums, against float64, over a wide range of t
    and near 0: within 4e-7 of max(1, |value|) (the float32 sine form itself: 3.3e-7)."""
    t = torch.cat([torch.linspace(-100.0, 100.0, 400_001), torch.linspace(-1e-3, 1e-3, 2001),
                   torch.randn(20_000, generator=torch.Generator().manual_seed(0))])
    got = SnakeScaled(None)(t[None, None]).reshape(-1).double()
    exact = t.double() + torch.sin(math.pi * t.double()) ** 2 / math.pi
    assert float(((got - exact).abs() / exact.abs().clamp(min=1.0)).max()) <= 4e-7


def test_onnx_friendly_copy_computes_the_same_chain_and_leaves_the_model_alone(codec):
    model = local_denoiser(codec, seed=2)
    graph = EnhanceGraph(codec.model, model, codec.n_codebooks).eval()
    before = {k: v.clone() for k, v in graph.state_dict().items()}
    kinds = {type(m) for m in graph.modules()}
    friendly, replaced = onnx_friendly(graph)
    assert replaced > 0
    new_kinds = {type(m) for m in friendly.modules()}
    assert Conv1dAs2d in new_kinds and nn.Conv1d not in new_kinds
    assert {type(m) for m in graph.modules()} == kinds, "the original keeps its layers"
    for k, v in graph.state_dict().items():
        assert torch.equal(v, before[k])
    wave = 0.1 * torch.randn(2, 40 * codec.hop_length)
    with torch.no_grad():
        z = codec.model.encoder(wave[:, None])
        _close(friendly.codec_model.encoder(wave[:, None]), z)
        _close(friendly.denoiser(z), model(z))
        zq = codec.model.quantizer(model(z), n_quantizers=codec.n_codebooks)[0]
        _close(friendly.codec_model.decoder(zq), codec.model.decoder(zq))


def test_a_snake_with_tiny_alphas_is_not_folded():
    class Snake1d(nn.Module):   # the layer is recognised by its name and alpha, as DAC's
        def __init__(self, alpha):
            super().__init__()
            self.alpha = nn.Parameter(alpha)

        def forward(self, x):
            return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)

    alpha = torch.tensor([0.0, 1.0, 2.0])[None, :, None]
    seq = nn.Sequential(nn.Conv1d(3, 3, 1), Snake1d(alpha), nn.Conv1d(3, 2, 3, padding=1))
    x = torch.randn(1, 3, 11)
    friendly, _ = onnx_friendly(seq)
    assert isinstance(friendly[1], SnakeProduct), "alpha 0 keeps the identity term exact"
    with torch.no_grad():
        _close(friendly(x), seq(x))
    seq[1].alpha.data = torch.tensor([0.5, 1.0, 2.0])[None, :, None]
    folded, _ = onnx_friendly(seq)
    assert isinstance(folded[1], SnakeScaled)
    with torch.no_grad():
        _close(folded(x), seq(x))


def _residual_units(codec) -> list[nn.Module]:
    block = codec.model.encoder.block[1].block
    return [m for m in block if residual_halo(m) is not None]


def test_residual_halo_reads_dacs_residual_units(codec):
    units = _residual_units(codec)
    assert [residual_halo(u) for u in units] == [3, 9, 27]  # kernel 7, dilations 1, 3, 9
    assert residual_halo(nn.Conv1d(4, 4, 3, padding=1)) is None
    assert residual_halo(codec.model.encoder.block[1]) is None, "a block is not a unit"


@pytest.mark.parametrize("length", [1, 3, 10, 77, 1001, 4003])
def test_residual_rows_equal_the_units_run_on_the_whole_signal(codec, length):
    """The pieces see every sample an output depends on, and zeros past the signal's ends."""
    units = _residual_units(codec)
    rows = ResidualRows(units, sum(residual_halo(u) for u in units), rows=4)
    torch.manual_seed(length)
    x = torch.randn(2, units[0].block[1].in_channels, length)
    with torch.no_grad():
        ref = x
        for unit in units:
            ref = unit(ref)
        _close(rows(x), ref)


def test_only_runs_with_unbalanced_channel_counts_are_split(codec):
    """Runs whose channels are not a multiple of 128 go into one ResidualRows each; a
    multiple of 128 is left as it is."""
    unit_type = type(_residual_units(codec)[0])
    torch.manual_seed(0)
    seq = nn.Sequential(unit_type(64, dilation=1), unit_type(64, dilation=3),
                        nn.Conv1d(64, 128, 1), unit_type(128, dilation=1))
    prepare_for_inference(seq)  # DAC builds its units with weight norm
    friendly, _ = onnx_friendly(seq)
    assert isinstance(friendly[0], ResidualRows) and len(friendly[0].units) == 2
    assert friendly[0].halo == 3 + 9
    assert not isinstance(friendly[2], ResidualRows) and len(friendly) == 3
    x = torch.randn(1, 64, 333)
    with torch.no_grad():
        _close(friendly(x), seq(x))


def test_the_exported_friendly_denoiser_runs_in_onnxruntime_like_torch(codec, tmp_path):
    from cleancodec.infer.export import DENOISER_MAX_ABS, export_denoiser

    model = local_denoiser(codec, seed=3)
    path = tmp_path / "d.onnx"
    report = export_denoiser(model, path)
    assert report.max_abs_diff <= DENOISER_MAX_ABS
    session = onnx_session(path, threads=1)
    z = np.random.default_rng(0).standard_normal((1, codec.latent_dim, 23)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: z})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(z)).numpy()
    assert np.abs(got - ref).max() <= DENOISER_MAX_ABS


def test_a_snake_evaluated_piece_by_piece_gives_the_same_values():
    torch.manual_seed(0)
    x = 3 * torch.randn(8, 5, 37)       # 2 items x 4 pieces on the batch axis
    alpha = torch.rand(1, 5, 1) + 0.5
    for snake_alpha in (alpha, None):
        whole = SnakeScaled(snake_alpha)(x)
        assert torch.equal(SnakeScaled(snake_alpha, pieces=4)(x), whole)
        assert torch.equal(SnakeScaled(snake_alpha, pieces=2)(x), whole)


def test_the_snakes_of_residual_rows_go_piece_by_piece_and_no_others(codec):
    model = local_denoiser(codec, seed=2)
    friendly, _ = onnx_friendly(EnhanceGraph(codec.model, model, codec.n_codebooks).eval())
    in_rows = {id(s) for r in friendly.modules() if isinstance(r, ResidualRows)
               for s in r.modules() if isinstance(s, SnakeScaled)}
    snakes = [m for m in friendly.modules() if isinstance(m, SnakeScaled)]
    assert in_rows and len(in_rows) < len(snakes)
    for snake in snakes:
        assert snake.pieces == (ROWS if id(snake) in in_rows else 1)

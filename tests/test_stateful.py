"""infer.stateful: layer-by-layer streaming equals whole-signal processing shifted by the
latency, block by block, for any block size and any push sizes, and each block costs its own
compute."""
from __future__ import annotations

import dataclasses
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cleancodec.core.codec import CodecConfig, load_codec
from cleancodec.infer import stream_layers
from cleancodec.infer.denoise import Enhancer, enhance_whole, snr_db
from cleancodec.infer.stateful import StatefulStream, _Compiled
from cleancodec.infer.step_graph import (
    END_UNKNOWN,
    StepGraph,
    _Quantize,
    fold_projections,
    stream_layer,
)
from cleancodec.infer.stream import StreamDenoiser, StreamError, stream_signal
from cleancodec.infer.stream_layers import (
    At,
    Pointwise,
    StepLayer,
    StreamConv1d,
    StreamConvTranspose1d,
    StreamResidual,
    StreamSequential,
    StreamWindowGRN,
)
from cleancodec.infer.streamio import StreamOptions, stream_file
from cleancodec.trainer.models import Denoiser, GlobalResponseNorm
from cleancodec.trainer.seed import SeedDenoiser
from tests.helpers import TINY_CODEC as TINY
from tests.helpers import assert_windowed_fallback, local_denoiser, speechlike

SR, HOP = 16000, 320
SNR_DB = 100.0  # streamed vs whole signal, float32 (float rounding: ~125-135 dB)
LAYER_ATOL = 1e-5  # one streamed layer vs the module on random input


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY)


@pytest.fixture(scope="module")
def enhancers(codec):
    return {"bypass": Enhancer(codec, None),
            "none": Enhancer(codec, local_denoiser(codec, "none")),
            "window": Enhancer(codec, local_denoiser(codec, "window", 5))}


def frames(block_ms: float) -> int:
    return round(block_ms * SR / 1000 / HOP)


def pieces(n: int, sizes: list[int]) -> list[int]:
    """Cut ``n`` samples into pieces cycling through ``sizes``."""
    out, i = [], 0
    while n > 0:
        out.append(min(n, sizes[i % len(sizes)]))
        n -= out[-1]
        i += 1
    return out


def run(stream: StreamDenoiser, x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Every push's output, then flush's (the last item)."""
    outs, i = [], 0
    for size in pieces(x.shape[-1], sizes):
        outs.append(stream.push(x[..., i:i + size]))
        i += size
    return outs + [stream.flush()]


# --- single layers ----------------------------------------------------------------------------


def run_layer(layer: StepLayer, x: torch.Tensor, sizes: list[int], unit: int) -> torch.Tensor:
    """Stream ``x[B x C x T]`` through ``layer`` in steps cycling through ``sizes`` (× ``unit``
    samples), end it with zeros and the signal's length, and put the outputs back on the
    offline time axis (positions before 0 or past the end dropped)."""
    layer.bind(0)
    state = [torch.zeros(shape) for shape in layer.state_shapes(x.shape[0])]
    got: dict[int, torch.Tensor] = {}
    pos, total = 0, x.shape[-1]

    def step(chunk: torch.Tensor, end: int) -> int:
        nonlocal state
        new: list[torch.Tensor] = []
        y, at = layer.step(chunk, At(pos, end), iter(state), new)
        state = new
        for j in range(y.shape[-1]):
            if 0 <= at.pos + j:
                got[at.pos + j] = y[..., j]
        return at.end

    for n in pieces(total, [s * unit for s in sizes]):
        step(x[..., pos:pos + n], END_UNKNOWN)
        pos += n
    for _ in range(4):  # the tail: zeros, with the length known
        end = step(torch.zeros(x.shape[0], x.shape[1], 8 * unit), total)
        pos += 8 * unit
    return torch.stack([got[i] for i in range(end)], dim=-1)


@pytest.mark.parametrize("k, s, d, p", [(7, 1, 1, 3), (7, 1, 9, 27), (4, 2, 1, 1), (10, 5, 1, 3),
                                        (16, 8, 1, 4), (3, 1, 1, 1), (1, 1, 1, 0), (5, 3, 2, 0)])
def test_streamed_conv_equals_the_module(k, s, d, p):
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 4, k, stride=s, dilation=d, padding=p)
    x = torch.randn(2, 3, 41 * s)
    y = run_layer(StreamConv1d(conv), x, [1, 5, 3], s)
    torch.testing.assert_close(y, conv(x), atol=LAYER_ATOL, rtol=0)


@pytest.mark.parametrize("k, s, p", [(4, 2, 1), (8, 4, 2), (10, 5, 3), (16, 8, 4), (7, 3, 2),
                                     (3, 3, 0)])
def test_streamed_transposed_conv_equals_the_module(k, s, p):
    """DAC's upsampling layers (kernel 2s, padding ceil(s/2): stride 5 drops one sample), a
    kernel that is not a multiple of the stride, and one without overlap (no state)."""
    torch.manual_seed(1)
    conv = nn.ConvTranspose1d(3, 2, k, stride=s, padding=p)
    x = torch.randn(2, 3, 41)
    y = run_layer(StreamConvTranspose1d(conv), x, [1, 3, 10], 1)
    torch.testing.assert_close(y, conv(x), atol=LAYER_ATOL, rtol=0)


def test_transposed_conv_weight_is_rearranged_once_and_follows_changes():
    """Streams of one module share its rearranged weight; a change to the weight gives later
    streams the new one."""
    torch.manual_seed(3)
    conv = nn.ConvTranspose1d(3, 2, 8, stride=4, padding=2)
    first, second = StreamConvTranspose1d(conv), StreamConvTranspose1d(conv)
    assert first.polyphase.data_ptr() == second.polyphase.data_ptr()
    with torch.no_grad():
        conv.weight.mul_(-2.0)
    x = torch.randn(1, 3, 20)
    y = run_layer(StreamConvTranspose1d(conv), x, [2, 5], 1)
    torch.testing.assert_close(y, conv(x), atol=LAYER_ATOL, rtol=0)


@pytest.mark.parametrize("layer", ["conv", "transposed"])
def test_wide_layers_equal_the_module_on_every_product_path(layer):
    """A weight over BLOCKED_MIN_BYTES: steps of 1 column (one product), 2 … 48 columns (row
    blocks, batched), more (one product) and more than MATMUL_MAX_OUTPUTS (F.conv1d)."""
    torch.manual_seed(4)
    if layer == "conv":
        module, make = nn.Conv1d(256, 256, 7, padding=3), StreamConv1d
    else:
        module, make = nn.ConvTranspose1d(128, 256, 16, stride=8, padding=4), \
            StreamConvTranspose1d
    streamed = make(module)
    rows = (streamed.polyphase if layer == "transposed" else module.weight).shape[0]
    assert (module.weight.numel() * 4 >= stream_layers.BLOCKED_MIN_BYTES
            and rows % stream_layers.BLOCKED_ROWS == 0)
    sizes = [1, 5, stream_layers.BLOCKED_MAX_COLUMNS, 60, stream_layers.MATMUL_MAX_OUTPUTS + 9]
    x = torch.randn(1, module.in_channels, 1400)
    with mock.patch.object(torch, "bmm", wraps=torch.bmm) as bmm, \
            mock.patch.object(torch, "baddbmm", wraps=torch.baddbmm) as baddbmm:
        y = run_layer(streamed, x, sizes, 1)
    assert bmm.call_count + baddbmm.call_count >= 2  # the 5- and 48-column steps
    torch.testing.assert_close(y, module(x), atol=LAYER_ATOL, rtol=0)


def test_traced_transposed_conv_runs_the_module_op():
    """With tensor positions (as when exported) the wide transposed convolution runs
    ``conv_transpose1d``, not row blocks laid out for the traced column count, and gives the
    eager step's output."""
    torch.manual_seed(5)
    module = nn.ConvTranspose1d(128, 256, 16, stride=8, padding=4)
    layer = StreamConvTranspose1d(module)
    layer.bind(0)
    state = [torch.zeros(shape) for shape in layer.state_shapes(1)]
    x = torch.randn(1, 128, 5)
    with mock.patch.object(torch, "bmm", wraps=torch.bmm) as bmm, \
            mock.patch.object(F, "conv_transpose1d", wraps=F.conv_transpose1d) as module_op:
        eager, _ = layer.step(x, At(0, END_UNKNOWN), iter(state), [])
        assert (bmm.call_count, module_op.call_count) == (1, 0)
        traced, _ = layer.step(x, At(torch.tensor(0), torch.tensor(END_UNKNOWN)), iter(state), [])
        assert (bmm.call_count, module_op.call_count) == (1, 1)
    torch.testing.assert_close(traced, eager, atol=LAYER_ATOL, rtol=0)


class _TensorPositions(StepLayer):
    """``layer`` given its positions as int64 tensors, as in an exported step."""

    def __init__(self, layer: StepLayer):
        super().__init__()
        self.layer = layer

    def bind(self, lag):
        return self.layer.bind(lag)

    def state_shapes(self, batch):
        return self.layer.state_shapes(batch)

    def step(self, x, at, state, new_state):
        y, out = self.layer.step(x, At(torch.tensor(at.pos), torch.tensor(at.end)), state,
                                 new_state)
        return y, At(int(out.pos), int(out.end))


@pytest.mark.parametrize("positions", ["int", "tensor"])
def test_streamed_residual_unit_equals_the_module(positions):
    """DAC's residual unit ``x + conv1(snake(conv7(snake(x))))`` with dilation 9 (its skip path
    waits 27 samples): steps shorter and longer than the wait, eager (the skip samples added
    in place) and with tensor positions (the exported form)."""
    torch.manual_seed(6)
    conv7, conv1 = nn.Conv1d(4, 4, 7, dilation=9, padding=27), nn.Conv1d(4, 4, 1)
    layer = StreamResidual(StreamSequential([StreamConv1d(conv7), Pointwise(nn.Tanh()),
                                             StreamConv1d(conv1)]), 4)
    if positions == "tensor":
        layer = _TensorPositions(layer)
    x = torch.randn(2, 4, 200)
    with torch.inference_mode():
        y = run_layer(layer, x, [1, 5, 40, 27], 1)
        torch.testing.assert_close(y, x + conv1(torch.tanh(conv7(x))), atol=LAYER_ATOL, rtol=0)


@pytest.mark.parametrize("window", [1, 3, 9])
def test_streamed_window_grn_equals_the_module(window):
    """The window statistics near both edges count only the frames inside the signal."""
    torch.manual_seed(2)
    grn = GlobalResponseNorm(6, kind="window", window=window)
    nn.init.normal_(grn.gamma), nn.init.normal_(grn.beta)
    x = torch.randn(2, 6, 30)
    y = run_layer(StreamWindowGRN(grn, 6), x, [1, 3, 7], 1)
    torch.testing.assert_close(y, grn(x.transpose(1, 2)).transpose(1, 2), atol=LAYER_ATOL,
                               rtol=0)


def test_quantize_step_equals_the_dac_quantizer(codec):
    """The chain's quantizer stage gives exactly what dac's residual quantizer returns, with
    some and with all codebooks, for a batch."""
    torch.manual_seed(6)
    quantizer = codec.model.quantizer
    z = 3.0 * torch.randn(2, quantizer.quantizers[0].in_proj.in_channels, 7)
    with torch.no_grad():
        for n in (1, codec.n_codebooks):
            assert torch.equal(_Quantize(quantizer, n)(z), quantizer(z, n_quantizers=n)[0])


def test_projections_fold_into_the_decoders_first_convolution(codec):
    """The quantizer stage's out-projection inputs through the folded convolution give the
    decoder's first convolution of the quantized latents, edges (zero padding) included."""
    torch.manual_seed(7)
    quantizer, conv = codec.model.quantizer, codec.model.decoder.model[0]
    z = 3.0 * torch.randn(2, quantizer.quantizers[0].in_proj.in_channels, 9)
    with torch.no_grad():
        for n in (1, codec.n_codebooks):
            stage = _Quantize(quantizer, n, projections=True)
            v = stage(z)
            assert v.shape == (2, n * quantizer.quantizers[0].codebook.weight.shape[1] + 1, 9)
            folded = fold_projections(conv, stage.quantizers)
            torch.testing.assert_close(folded(v), conv(quantizer(z, n_quantizers=n)[0]),
                                       rtol=1e-5, atol=1e-5)


def decoder_input_conv(graph: StepGraph) -> nn.Conv1d:
    """The convolution of the graph's first decoder layer."""
    return graph.chain.layers[-1].layer.layers[0].conv


def test_the_step_graph_folds_the_projections_unless_told_not_to(codec):
    folded = StepGraph(codec.model, None, codec.n_codebooks)
    plain = StepGraph(codec.model, None, codec.n_codebooks, fold=False)
    first = [decoder_input_conv(g) for g in (folded, plain)]
    d = codec.model.quantizer.quantizers[0].codebook.weight.shape[1]
    assert first[0].in_channels == d * codec.n_codebooks + 1
    assert first[1] is codec.model.decoder.model[0]
    x = torch.from_numpy(speechlike(0.5, 3))[None]
    with torch.no_grad():
        y = [g(x, 0, x.shape[1], *g.initial_state(1))[0] for g in (folded, plain)]
    assert snr_db(y[1].numpy(), y[0].numpy()) >= SNR_DB


def test_unknown_layers_are_refused():
    with pytest.raises(StreamError, match="no streaming counterpart for layer ReLU"):
        stream_layer(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.ReLU()))


# --- whole chain: tiny codec ------------------------------------------------------------------


# block size × push sizes: 1 sample, 317 samples (not a divisor of the hop), 3 s at once
CASES = [(block_ms, push, kind) for block_ms, kind in
         [(20, "window"), (100, "none"), (200, "window"), (1000, "bypass")]
         for push in (1, 317, 3 * SR)]


@pytest.mark.parametrize("block_ms, push, kind", CASES)
def test_streamed_equals_whole_signal(enhancers, block_ms, push, kind):
    """Aligned output = offline output (``enhance_whole``), sample for sample, the first block
    and the flushed tail included; each block comes out once ``lookahead`` samples past its
    end are in."""
    enh = enhancers[kind]
    seconds = 0.7 if push == 1 else 3.1  # not a whole number of hops
    x = speechlike(seconds, 7)
    whole = enhance_whole(enh, x)
    stream = StatefulStream.for_engine(enh, block_frames=frames(block_ms))
    g = stream.geometry
    outs = run(stream, x, [push])
    y = np.concatenate(outs)
    assert y.shape == x.shape and y.dtype == np.float32
    assert snr_db(whole, y) >= SNR_DB
    # the first block: returned by the push that completes block + lookahead samples
    ends = np.cumsum(pieces(len(x), [push]))
    first = int(np.searchsorted(ends, g.block + g.lookahead))
    if first < len(ends):
        assert all(o.size == 0 for o in outs[:first])
        assert outs[first].shape[0] >= g.block
        head = outs[first][:g.block]
        assert snr_db(whole[:g.block], head) >= SNR_DB
    # the last block(s): what flush returns ends the signal exactly as offline processing
    tail = outs[-1]
    assert 0 < tail.shape[0] <= g.latency + g.block
    assert snr_db(whole[len(x) - tail.shape[0]:], tail) >= SNR_DB


def test_uneven_pushes_and_fixed_delay(enhancers):
    enh = enhancers["window"]
    x = speechlike(3.0, 8)
    whole = enhance_whole(enh, x)
    stream = StatefulStream.for_engine(enh, block_ms=100, fixed_delay=True)
    outs = run(stream, x, [1, 317, 4000, 2, 999])
    assert all(o.shape[0] == n for o, n in zip(outs, pieces(len(x), [1, 317, 4000, 2, 999])))
    assert outs[-1].shape == (stream.latency,)
    y = np.concatenate(outs)
    assert not np.any(y[:stream.latency])
    assert snr_db(whole, y[stream.latency:]) >= SNR_DB


def test_same_latency_and_output_as_the_windowed_stream(enhancers):
    enh = enhancers["none"]
    x = speechlike(2.0, 9)
    stateful = StatefulStream.for_engine(enh, block_frames=4)
    windowed = StreamDenoiser.for_engine(enh, block_frames=4)
    assert stateful.latency == windowed.latency
    a, b = run(stateful, x, [1000]), run(windowed, x, [1000])
    assert [o.shape for o in a] == [o.shape for o in b]  # blocks leave at the same pushes
    assert snr_db(np.concatenate(b), np.concatenate(a)) >= SNR_DB


def test_each_block_runs_the_chain_on_its_own_samples(enhancers):
    """Past the first block (which brings the lookahead), every chain step takes exactly one
    block of new samples: the compute per block is the block's own."""
    enh = enhancers["window"]
    stream = StatefulStream.for_engine(enh, block_frames=5)
    sizes = []
    step = stream.chain.step
    stream.chain.step = lambda w: sizes.append(w.shape[1]) or step(w)
    run(stream, speechlike(3.0, 10), [317])
    g = stream.geometry
    assert sizes[0] == g.block + g.lookahead
    assert set(sizes[1:-1]) == {g.block}


def test_a_step_takes_one_block_unless_two_are_pending(enhancers):
    """Pushes of 1.3 blocks: the chain steps one block at a time (the size a torch stream
    traces) while one to two blocks are pending, and takes every pending hop otherwise (two
    blocks or more at once; less than a block when that is all a due block still needs)."""
    enh = enhancers["window"]
    stream = StatefulStream.for_engine(enh, block_frames=5)
    g, steps = stream.geometry, []
    step = stream.chain.step
    stream.chain.step = lambda w: steps.append(
        (w.shape[1], stream._pending.shape[1] // HOP * HOP)) or step(w)
    x = speechlike(3.0, 17)
    y = np.concatenate(run(stream, x, [g.block * 13 // 10 + 17]))
    for n, pending in steps:
        assert n == (g.block if g.block <= pending < 2 * g.block else pending)
    assert [n for n, _ in steps].count(g.block) >= 2 * len(steps) // 3
    assert snr_db(enhance_whole(enh, x), y) >= SNR_DB


def test_block_steps_inside_the_signal_run_traced_with_the_eager_output(enhancers):
    """A stream traces its block's step once per engine; steps of that size from
    ``interior_from`` on run the trace, whose output and state equal the eager step's bit for
    bit; the stream still equals offline processing."""
    enh = enhancers["window"]
    stream = StatefulStream.for_engine(enh, block_frames=4)
    chain, g = stream.chain, stream.geometry
    trace = chain.traced[1, g.block]
    assert StatefulStream.for_engine(enh, block_frames=4).chain.traced[1, g.block] is trace
    calls = []
    chain.traced[1, g.block] = lambda *a: calls.append(1) or trace(*a)
    x = speechlike(3.0, 15)
    y = np.concatenate(run(stream, x, [g.block]))
    interior_steps = (len(x) - chain.compiled.interior_from) // g.block
    assert interior_steps - 1 <= len(calls) <= interior_steps + 1
    assert snr_db(enhance_whole(enh, x), y) >= SNR_DB

    torch.manual_seed(0)
    graph = chain.graph
    state = [torch.randn(shape) for shape in graph.state_shapes(1)]
    wave = torch.randn(1, g.block)
    for position in (chain.compiled.interior_from, chain.compiled.interior_from + 7 * HOP):
        with torch.inference_mode():
            eager = graph(wave, position, END_UNKNOWN, *state)
            traced = trace(wave, *state)
        assert all(torch.equal(a, b) for a, b in zip(eager, traced, strict=True))


def test_a_stream_opened_after_weights_change_uses_the_new_weights():
    """Streams of one engine share its graph and traces until a weight changes in place (or a
    module is swapped): then the next stream follows offline processing with the new
    weights."""
    codec = load_codec(TINY)  # its own: the weights change
    enh = Enhancer(codec, local_denoiser(codec, "window", 3))
    x = speechlike(2.0, 18)
    first = StatefulStream.for_engine(enh, block_frames=4)
    assert snr_db(enhance_whole(enh, x), stream_signal(first, x, 4 * HOP)) >= SNR_DB
    assert StatefulStream.for_engine(enh, block_frames=4).chain.graph is first.chain.graph
    with torch.no_grad():
        enh.denoiser.head.weight.mul_(-3.0)
        codebook = codec.model.quantizer.quantizers[0].codebook.weight
        codebook.add_(torch.randn(codebook.shape, generator=torch.Generator().manual_seed(0)))
    again = StatefulStream.for_engine(enh, block_frames=4)
    assert again.chain.graph is not first.chain.graph
    assert snr_db(enhance_whole(enh, x), stream_signal(again, x, 4 * HOP)) >= SNR_DB


def test_a_step_is_not_traced_at_the_signal_edge_nor_under_bf16(codec, enhancers):
    chain = StatefulStream.for_engine(enhancers["none"], block_frames=2).chain
    at_start = _Compiled(chain.graph, HOP, chain.compiled.key)
    at_start.interior_from = 0
    with pytest.raises(StreamError, match="edge of the signal"):
        at_start.trace(1, 2 * HOP, torch.device("cpu"))
    bf16 = load_codec(CodecConfig(**{**dataclasses.asdict(TINY), "bf16": True}))
    enh = Enhancer(bf16, local_denoiser(bf16, "none"))
    stream = StatefulStream.for_engine(enh, block_frames=2)
    assert stream.chain.traced == {}
    assert decoder_input_conv(stream.chain.graph) is bf16.model.decoder.model[0]
    y = stream_signal(stream, speechlike(1.0, 16), 2 * HOP)  # eager steps throughout
    assert y.shape == (SR,) and np.isfinite(y).all() and np.any(y)


def test_reset_multichannel_and_short_streams(enhancers):
    enh = enhancers["window"]
    x = np.stack([speechlike(1.5, 11), speechlike(1.5, 12)])
    stream = StatefulStream.for_engine(enh, block_frames=3, channels=2)
    first = stream_signal(stream, x, 1234)
    whole = enhance_whole(enh, x)
    assert min(snr_db(whole[c], first[c]) for c in range(2)) >= SNR_DB
    stream.reset()
    np.testing.assert_array_equal(stream_signal(stream, x, 1234), first)
    mono = StatefulStream.for_engine(enh, block_frames=10)
    for n in (0, 1, 319, 321, 4000):
        mono.reset()
        y = stream_signal(mono, x[0, :n], 100)
        assert y.shape == (n,)
        if n:
            assert snr_db(enhance_whole(enh, x[0, :n]), y) >= SNR_DB
    with pytest.raises(StreamError, match="reset"):
        mono.push(np.zeros(3, np.float32))


def test_global_statistics_are_refused_and_the_cli_falls_back(codec, caplog, tmp_path):
    torch.manual_seed(2)
    for model, name in ((Denoiser(codec.latent_dim, 16, 2), "grn: global"),
                        (SeedDenoiser(codec.latent_dim, 16, 1), "seed")):
        enh = Enhancer(codec, model.eval())
        with pytest.raises(StreamError, match=f"{name}.*whole sequence.*grn: none"):
            StatefulStream.for_engine(enh, block_frames=5)
        assert_windowed_fallback(enh, "whole sequence", "windowed stream", caplog)
        caplog.clear()


def test_stream_file_uses_the_stateful_engine(tmp_path, enhancers):
    import soundfile as sf

    x = speechlike(1.5, 13)
    sf.write(tmp_path / "in.wav", x, SR, subtype="FLOAT")
    notes = []
    stream_file(enhancers["window"], str(tmp_path / "in.wav"), str(tmp_path / "out.wav"),
                StreamOptions(block_ms=100), notify=notes.append)
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == SR and "stateful" in notes[0] and "latency" in notes[0]
    assert snr_db(enhance_whole(enhancers["window"], x), y) >= SNR_DB


# --- whole chain: DAC 16 kHz ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dac16k():
    """The real architecture (random weights, 1536-channel decoder, 64-dim encoder) with a
    ``window`` denoiser, 2.1 s of speech and its offline enhancement."""
    codec = load_codec(CodecConfig(weights="random", random_arch="dac16k", num_threads=1))
    enh = Enhancer(codec, local_denoiser(codec, "window", 3))
    x = speechlike(2.1, 14)
    return enh, x, enhance_whole(enh, x)


@pytest.mark.slow
@pytest.mark.parametrize("block_ms, push", [(20, 317), (100, 1), (200, 3 * SR), (1000, 317)])
def test_dac16k_streamed_equals_whole_signal(dac16k, block_ms, push):
    enh, x, whole = dac16k
    stream = StatefulStream.for_engine(enh, block_ms=block_ms)
    outs = run(stream, x, [push])
    y = np.concatenate(outs)
    assert y.shape == x.shape
    assert snr_db(whole, y) >= SNR_DB
    g = stream.geometry
    first = next(o for o in outs if o.size)
    assert snr_db(whole[:g.block], first[:g.block]) >= SNR_DB
    assert snr_db(whole[len(x) - outs[-1].shape[0]:], outs[-1]) >= SNR_DB

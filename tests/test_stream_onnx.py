"""The streaming step exported to ONNX (``cleancodec export --full --streaming``) and run by
onnxruntime: step by step it equals the torch step, as a stream it equals offline processing,
and ``--engine onnx`` streams with it (and denoises files with it)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from cleancodec.cli import main
from cleancodec.infer.denoise import Enhancer, enhance_whole, snr_db
from cleancodec.infer.export import STREAM_MAX_ABS, export_streaming, read_metadata
from cleancodec.infer.onnx_engine import OnnxEnhancer, OnnxStepChain
from cleancodec.infer.stateful import StatefulStream, TorchStepChain
from cleancodec.infer.stream import StreamError
from cleancodec.trainer.models import Denoiser
from tests.helpers import assert_windowed_fallback, speechlike

pytestmark = pytest.mark.slow  # the session's streaming export takes about a minute

SR = 16000
SNR_DB = 100.0  # streamed vs whole signal (float rounding)
STREAM_S = 10.0  # the stream compared block by block


@pytest.fixture(scope="module")
def engines(tiny_stream_graph):
    codec, model, path, _ = tiny_stream_graph
    return Enhancer(codec, model), OnnxEnhancer(path)


def test_export_names_its_state_and_was_checked_step_by_step(tiny_stream_graph, engines):
    _, _, path, report = tiny_stream_graph
    assert report.kind == "stream" and report.max_abs_diff <= STREAM_MAX_ABS
    assert "steps over a 10 s stream and its end" in report.checks[-1]
    onnx = engines[1]
    meta = read_metadata(onnx.session)
    states = json.loads(meta["stream_states"])
    inputs = {i.name: i.shape for i in onnx.session.get_inputs()}
    outputs = {o.name for o in onnx.session.get_outputs()}
    assert list(inputs)[:3] == ["wave", "position", "end"] and "enhanced" in outputs
    assert len(states) == len(TorchStepChain(engines[0]).graph.state_shapes(1)) > 10
    for spec in states:
        assert inputs[spec["input"]][1:] == spec["shape"][1:] and spec["output"] in outputs
        assert spec["shape"][0] == "batch"
    # the layers' lag fits in the stream's lookahead (the receptive field in whole frames)
    field = onnx.chain_field
    assert int(meta["stream_lag"]) == onnx.lag <= field.lookahead_frames() * field.hop


def test_onnx_stream_equals_torch_block_by_block_over_10_s(engines):
    """Per block max abs ≤ 1e-4 against the torch stateful stream, and both equal offline."""
    torch_engine, onnx = engines
    x = speechlike(STREAM_S, 21)
    streams = [StatefulStream.for_engine(e, block_ms=100) for e in engines]
    assert isinstance(streams[1].chain, OnnxStepChain)
    worst, outs = 0.0, ([], [])
    for i in range(0, len(x), 1600):
        a, b = (s.push(x[i:i + 1600]) for s in streams)
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)))
        outs[0].append(a), outs[1].append(b)
    a, b = (s.flush() for s in streams)
    worst = max(worst, float(np.max(np.abs(a - b))))
    assert worst <= STREAM_MAX_ABS
    whole = enhance_whole(torch_engine, x)
    y = np.concatenate([*outs[1], b])
    assert y.shape == x.shape and snr_db(whole, y) >= SNR_DB


def test_uneven_pushes_and_offline_use(engines):
    torch_engine, onnx = engines
    x = np.stack([speechlike(2.3, 22), speechlike(2.3, 23)])
    whole = enhance_whole(torch_engine, x)
    stream = StatefulStream.for_engine(onnx, block_frames=3, channels=2)
    outs, i = [], 0
    for n in [1, 317, 48000, 5, 999] * 3:
        outs.append(stream.push(x[:, i:i + n]))
        i += n
    y = np.concatenate([*outs, stream.flush()], axis=1)
    assert min(snr_db(whole[c], y[c]) for c in range(2)) >= SNR_DB
    # one step over the whole signal is offline enhancement
    assert min(snr_db(whole[c], onnx(x)[c]) for c in range(2)) >= SNR_DB


def test_cli_streams_statefully_with_the_onnx_engine(engines, tiny_stream_graph, tmp_path):
    torch_engine, _ = engines
    x = speechlike(1.7, 24)
    sf.write(tmp_path / "in.wav", x, SR, subtype="FLOAT")
    result = CliRunner().invoke(main, [
        "denoise", "--stream", "--engine", "onnx", "--onnx", str(tiny_stream_graph[2]),
        "--block-ms", "100", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")])
    assert result.exit_code == 0, result.output
    assert "stateful" in result.output
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == SR and snr_db(enhance_whole(torch_engine, x), y) >= SNR_DB


def test_a_whole_signal_graph_streams_windowed(tiny_full_graph, caplog):
    assert_windowed_fallback(OnnxEnhancer(tiny_full_graph[2]), "--streaming", "--streaming",
                             caplog)


def test_streaming_export_refusals(tiny_stream_graph, tmp_path):
    codec = tiny_stream_graph[0]
    torch.manual_seed(3)
    with pytest.raises(StreamError, match="whole sequence"):
        export_streaming(codec, Denoiser(codec.latent_dim, 16, 1).eval(), tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()
    result = CliRunner().invoke(main, ["export", "--streaming", __file__,
                                       str(tmp_path / "g.onnx")])
    assert result.exit_code == 1 and "--streaming exports the whole chain: add --full" in \
        result.output

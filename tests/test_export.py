"""infer.export / infer.onnx_engine: ONNX graphs agree with torch; `--engine onnx` runs them
chunked (files) and streamed; exports are atomic and checked before they are published."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import cleancodec.infer.export as export_mod
from cleancodec.cli import main
from cleancodec.infer.denoise import Enhancer, enhance_whole, snr_db
from cleancodec.infer.engines import load_engine
from cleancodec.infer.export import (
    DENOISER_MAX_ABS,
    ExportError,
    export_denoiser,
    onnx_session,
    read_metadata,
)
from cleancodec.infer.onnx_engine import OnnxEnhancer
from cleancodec.infer.run import run_denoise
from cleancodec.infer.stream import StreamDenoiser, stream_signal
from cleancodec.trainer.models import Denoiser
from tests.helpers import TINY_CODEC as TINY
from tests.helpers import local_denoiser, save_checkpoint, speechlike

SR = 16000
ONNX_VS_TORCH_SNR_DB = 60.0  # measured ≈ 126 dB on the tiny codec (float rounding)


@pytest.fixture(scope="module")
def codec():
    from cleancodec.core.codec import load_codec

    return load_codec(TINY)


@pytest.fixture
def full_graph(tiny_full_graph):
    """``(denoiser, path, report)`` of the session's tiny full graph (``conftest.py``: one
    export per test session, about 2.5 min on 2 shared cores)."""
    return tiny_full_graph[1:]


# --- the denoiser alone -----------------------------------------------------------------------


def _grn_denoiser(codec, kind: str, window: int) -> Denoiser:
    """A small denoiser whose response normalisation (``kind``) really acts."""
    model = local_denoiser(codec, kind, window)
    if kind != "none":
        with torch.no_grad():
            for block in model.blocks:
                block.grn.gamma.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def denoiser_graph(codec, tmp_path_factory):
    """``(denoiser, path, report)``: a small denoiser exported once for this module (a
    denoiser export takes 10-30 s on 2 shared cores)."""
    model = _grn_denoiser(codec, "none", 0)
    path = tmp_path_factory.mktemp("onnx_denoiser") / "denoiser.onnx"
    return model, path, export_denoiser(model, path)


def _check_denoiser_graph(codec, model: Denoiser, path, report) -> None:
    assert report.max_abs_diff <= DENOISER_MAX_ABS and path.is_file()
    session = onnx_session(path)
    assert read_metadata(session)["kind"] == "denoiser"
    z = codec.encode(speechlike(2.3, 5)).numpy()  # raw latents of a length not seen before
    got = session.run(["denoised"], {"latents": z})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(z)).numpy()
    assert np.max(np.abs(got - ref)) <= DENOISER_MAX_ABS
    assert not list(path.parent.glob(".*.tmp"))


def test_denoiser_export_matches_torch(codec, denoiser_graph):
    _check_denoiser_graph(codec, *denoiser_graph)


def test_exported_nodes_carry_no_exporter_traces(denoiser_graph):
    """The exporter's per-node debug metadata (stack traces with this machine's paths) is not
    written; the graph's own metadata is."""
    import onnx

    model = onnx.load(str(denoiser_graph[1]))
    assert model.graph.node and not [p.key for n in model.graph.node for p in n.metadata_props]
    assert any(p.key.startswith(export_mod.META_PREFIX) for p in model.metadata_props)


@pytest.mark.slow  # one export each
@pytest.mark.parametrize("kind, window", [("window", 5), ("global", 0)])
def test_denoiser_export_with_normalisation_matches_torch(tmp_path, codec, kind, window):
    model = _grn_denoiser(codec, kind, window)
    path = tmp_path / "denoiser.onnx"
    _check_denoiser_graph(codec, model, path, export_denoiser(model, path))


@pytest.mark.slow  # one export
def test_cli_export_denoiser(tmp_path, codec):
    ckpt = save_checkpoint(tmp_path / "best.pt", local_denoiser(codec), codec.identity)
    result = CliRunner().invoke(main, ["export", str(ckpt), str(tmp_path / "d.onnx")])
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.output and (tmp_path / "d.onnx").is_file()
    diff = float(result.output.split("max abs difference ")[1].split(",")[0])
    assert diff <= DENOISER_MAX_ABS


def test_failed_check_publishes_nothing(tmp_path, codec, denoiser_graph, monkeypatch):
    """A graph that fails its check against torch is not published (the export itself is the
    module's graph, copied, so that only the check runs here)."""
    model, graph, _ = denoiser_graph

    def copy_graph(module, example, names, dynamic, metadata, tmp, path) -> None:
        tmp.write_bytes(graph.read_bytes())

    monkeypatch.setattr(export_mod, "_export", copy_graph)
    monkeypatch.setattr(export_mod, "DENOISER_MAX_ABS", -1.0)
    with pytest.raises(ExportError, match="differs from torch"):
        export_denoiser(model, tmp_path / "d.onnx")
    assert list(tmp_path.iterdir()) == []


# --- wide convolutions as 2-D convolutions --------------------------------------------------


def _convs(wide: int, narrow: int) -> torch.nn.Sequential:
    """Every kind of Conv1d the codecs and denoisers hold: dilated, strided, depthwise, 1 x 1,
    and one narrower than the 2-D threshold."""
    c = torch.nn.Conv1d
    return torch.nn.Sequential(
        c(wide, wide, 7, dilation=3, padding=9), c(wide, wide, 4, stride=2, padding=1),
        c(wide, wide, 7, padding=3, groups=wide), c(wide, wide, 1), c(wide, narrow, 3),
        c(narrow, narrow, 7, padding=3), c(narrow, wide, 3, bias=False))


def _conv_weights(path) -> list[tuple[int, ...]]:
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


def test_wide_convolutions_export_as_2d_with_the_same_output(tmp_path):
    torch.manual_seed(0)
    wide, narrow = export_mod.CONV2D_MIN_CHANNELS, export_mod.CONV2D_MIN_CHANNELS // 2
    module = _convs(wide, narrow).eval()
    x = torch.randn(2, wide, 50)
    frames = torch.export.Dim("frames", min=30)
    for conv2d, name in ((False, "plain.onnx"), (True, "conv2d.onnx")):
        export_mod._export(module, (x,), (["x"], ["y"]), ({2: frames},), {}, tmp_path / name,
                           tmp_path / name, conv2d=conv2d)
    plain, rewritten = (_conv_weights(tmp_path / name) for name in ("plain.onnx", "conv2d.onnx"))
    assert [len(w) for w in plain] == [3] * 7
    # kernel > 1 and both channel counts ≥ the threshold: 2-D; the 1 x 1 and narrow ones stay
    assert rewritten == [(wide, wide, 1, 7), (wide, wide, 1, 4), (wide, 1, 1, 7), (wide, wide, 1),
                         (narrow, wide, 3), (narrow, narrow, 7), (wide, narrow, 3)]
    for length in (50, 83):
        x = torch.randn(2, wide, length)
        with torch.no_grad():
            ref = module(x).numpy()
        got = onnx_session(tmp_path / "conv2d.onnx").run(["y"], {"x": x.numpy()})[0]
        assert got.shape == ref.shape and np.max(np.abs(got - ref)) <= 1e-5


def test_a_shared_weight_is_rewritten_once(tmp_path):
    torch.manual_seed(0)
    wide = export_mod.CONV2D_MIN_CHANNELS
    conv = torch.nn.Conv1d(wide, wide, 3, padding=1)
    module = torch.nn.Sequential(conv, torch.nn.Tanh(), conv).eval()
    x = torch.randn(1, wide, 40)
    export_mod._export(module, (x,), (["x"], ["y"]), ({2: torch.export.Dim("frames", min=8)},),
                       {}, tmp_path / "g.onnx", tmp_path / "g.onnx", conv2d=True)
    assert _conv_weights(tmp_path / "g.onnx") == [(wide, wide, 1, 3)] * 2
    with torch.no_grad():
        ref = module(x).numpy()
    got = onnx_session(tmp_path / "g.onnx").run(["y"], {"x": x.numpy()})[0]
    assert np.max(np.abs(got - ref)) <= 1e-5


@pytest.mark.slow  # the session's full-graph export
def test_exported_graphs_rewrite_only_their_wide_convolutions(tiny_full_graph):
    """The shared tiny graph: the codec's convolutions (≤ 64 channels) stay 1-D, the small
    denoiser's depthwise ones (256 channels) are 2-D — so the full-graph and streaming tests
    run rewritten graphs."""
    codec, model, path, _ = tiny_full_graph
    weights = _conv_weights(path)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)
                 and m.kernel_size[0] > 1 and m.in_channels >= export_mod.CONV2D_MIN_CHANNELS]
    assert depthwise and sum(len(w) == 4 for w in weights) == len(depthwise)
    assert all(len(w) == 3 for w in weights if w[0] < export_mod.CONV2D_MIN_CHANNELS)


# --- the full graph ---------------------------------------------------------------------------


@pytest.mark.slow  # the session's full-graph export
def test_full_graph_matches_torch(codec, full_graph):
    model, path, report = full_graph
    assert report.snr_db >= ONNX_VS_TORCH_SNR_DB and report.kind == "full"
    engine = OnnxEnhancer(path, threads=1)
    assert engine.sample_rate == SR and engine.hop == codec.hop_length
    assert engine.info["step"] == 5 and engine.checkpoint == "runs/x/best.pt"
    assert engine.codec.is_random and engine.codec.identity == codec.identity
    torch_enh = Enhancer(codec, model)
    x = np.stack([speechlike(2.0, 6)[:31_999], speechlike(2.0, 7)[:31_999]])  # not hop-aligned
    ref, got = enhance_whole(torch_enh, x), enhance_whole(engine, x)
    assert got.shape == x.shape
    assert min(snr_db(ref[c], got[c]) for c in range(2)) >= ONNX_VS_TORCH_SNR_DB


@pytest.mark.slow  # the session's full-graph export
def test_onnx_engine_streams_like_torch(codec, full_graph):
    model, path, _ = full_graph
    engine = OnnxEnhancer(path, threads=1)
    torch_enh = Enhancer(codec, model)
    onnx_stream = StreamDenoiser.for_engine(engine, block_frames=4)
    torch_stream = StreamDenoiser.for_engine(torch_enh, block_frames=4)
    assert onnx_stream.geometry == torch_stream.geometry  # receptive field from the metadata
    x = speechlike(2.5, 8)
    y = stream_signal(onnx_stream, x, 1000)
    assert snr_db(enhance_whole(torch_enh, x), y) >= ONNX_VS_TORCH_SNR_DB


@pytest.mark.slow  # the session's full-graph export
def test_engine_onnx_denoises_files_like_torch(tmp_path, codec, full_graph):
    model, path, _ = full_graph
    ckpt = save_checkpoint(tmp_path / "best.pt", model, codec.identity)
    src = tmp_path / "in.wav"
    sf.write(src, speechlike(3.0, 9), SR, subtype="FLOAT")
    overrides = ["codec.weights=random", "codec.random_arch=tiny", "codec.num_threads=1",
                 f"denoise.checkpoint={ckpt}", "denoise.chunk_frames=60",
                 "denoise.crossfade_frames=2"]
    outs = {}
    for engine in ("torch", "onnx"):
        summary, out = run_denoise(src, tmp_path / f"{engine}.wav", overrides=overrides,
                                   progress=False,
                                   load=functools.partial(load_engine, engine, str(path)))
        assert not summary.failed and summary.random_codec
        outs[engine] = sf.read(out, dtype="float32")[0]
    assert snr_db(outs["torch"], outs["onnx"]) >= ONNX_VS_TORCH_SNR_DB


def test_onnx_engine_errors(tmp_path, codec, denoiser_graph):
    den = denoiser_graph[1]
    with pytest.raises(ExportError, match="denoiser alone.*--full"):
        OnnxEnhancer(den)
    with pytest.raises(ExportError, match="not found"):
        OnnxEnhancer(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="needs --onnx"):
        load_engine("onnx", None, None, TINY)
    src = tmp_path / "in.wav"
    sf.write(src, speechlike(0.5, 1), SR)
    result = CliRunner().invoke(main, ["denoise", str(src), str(tmp_path / "out.wav"),
                                       "--engine", "onnx", "--onnx", str(den)])
    assert result.exit_code != 0 and "denoiser alone" in result.output


@pytest.mark.slow  # the session's full-graph export
def test_cli_stream_with_the_onnx_engine(codec, full_graph):
    import io

    from cleancodec.infer.pcm import PcmFormat, PcmReader, PcmWriter, read_wav_header

    model, path, _ = full_graph
    x = speechlike(1.5, 10)
    pcm = PcmFormat("f32", SR, 1)
    buf = io.BytesIO()
    PcmWriter(buf, pcm).write(x[None])
    result = CliRunner().invoke(main, ["denoise", "--stream", "-", "-", "--engine", "onnx",
                                       "--onnx", str(path), "--threads", "1"],
                                input=buf.getvalue())
    assert result.exit_code == 0, result.output
    out = io.BytesIO(result.stdout_bytes)
    fmt, _ = read_wav_header(out)
    y = np.concatenate(list(PcmReader(out, fmt).blocks()), axis=1)[0]
    assert fmt == pcm and y.shape == x.shape
    assert snr_db(enhance_whole(Enhancer(codec, model), x), y) >= ONNX_VS_TORCH_SNR_DB
    assert "latency" in result.stderr


@pytest.mark.slow
def test_stream_benchmark_smoke(full_graph, tiny_stream_graph):
    """`python bench/stream.py --smoke` runs end to end on the session's graphs (the same
    models as the benchmark's, so it skips its own exports): windowed and stateful streams of
    both engines, the offline reference, the fixed cost per step and, with three rounds, each
    stateful row's ratio per round (``--no-long``: without the end-to-end and memory runs,
    which ``test_stream_long_runs`` covers)."""
    import subprocess
    import sys

    from tests.helpers import REPO

    _, path, _ = full_graph
    proc = subprocess.run([sys.executable, "bench/stream.py", "--smoke", "--no-append",
                           "--onnx", str(path), "--onnx-step", str(tiny_stream_graph[2]),
                           "--no-long", "--rounds", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for engine in ("torch", "onnxruntime"):
        for stream in ("windowed", "stateful"):
            assert f"| {engine} | {stream} | 1 |" in proc.stdout
    assert "smallest real-time block" in proc.stdout and "latency ms" in proc.stdout
    assert "Offline reference" in proc.stdout and "per step +" in proc.stdout
    assert "in 3 runs per stream" in proc.stdout
    for engine in ("torch", "onnxruntime"):  # --rounds above the default: ratios per round
        assert f"- {engine} stateful, 1 thread(s), 20 ms: ÷ offline per round" in proc.stdout

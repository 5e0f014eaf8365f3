"""infer.receptive / infer.stream / infer.pcm / infer.streamio: the receptive field, streamed
output = whole-signal output shifted by the latency, WAV and raw PCM over pipes, the CLI."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from cleancodec.core.codec import CodecConfig, load_codec
from cleancodec.infer.denoise import DenoiseConfig, Enhancer, enhance_whole, load_enhancer, snr_db
from cleancodec.infer.pcm import PcmError, PcmFormat, PcmReader, PcmWriter, read_wav_header
from cleancodec.infer.receptive import codec_chain_field, gradient_span
from cleancodec.infer.stream import (
    StreamDenoiser,
    StreamError,
    StreamGeometry,
    block_frames_for,
    stream_signal,
)
from cleancodec.infer.streamio import StreamOptions, stream_file
from cleancodec.trainer.models import Denoiser
from tests.helpers import REPO, local_denoiser, save_checkpoint, speechlike
from tests.helpers import TINY_CODEC as TINY

HOP = 320
SR = 16000
API_SNR_DB = 100.0  # streamed vs whole signal through the Python API (float rounding: ~128 dB)
CLI_SNR_DB = 60.0  # the same through the CLI, with 16-bit samples in between
# DAC 16 kHz (and the tiny codec: same kernels, strides and dilations), hop 320, in samples
DAC_ENCODER_PAST, DAC_ENCODER_FUTURE = 2501, 2493
DAC_DECODER_FRAMES = 10
DAC_CHAIN_PAST, DAC_CHAIN_FUTURE = 5701, 5693


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY)


@pytest.fixture(scope="module")
def enhancer(codec):
    return Enhancer(codec, local_denoiser(codec))


# --- receptive field --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tiny", "dac16k"])
def test_dac_receptive_field_figures(arch):
    field = codec_chain_field(load_codec(CodecConfig(weights="random", random_arch=arch)), None)
    assert (field.encoder_past, field.encoder_future) == (DAC_ENCODER_PAST, DAC_ENCODER_FUTURE)
    assert field.decoder_past == field.decoder_future == DAC_DECODER_FRAMES
    assert (field.context, field.lookahead) == (DAC_CHAIN_PAST, DAC_CHAIN_FUTURE)
    assert field.exact and "356 ms" in field.describe()


@pytest.mark.parametrize("kind, window", [("none", 0), ("window", 5)])
def test_receptive_field_equals_the_gradient_support(codec, kind, window):
    """The computed spans are exactly where d(output)/d(input) is non-zero."""
    torch.manual_seed(0)
    model = local_denoiser(codec, kind, window)
    field = codec_chain_field(codec, model)
    assert field.denoiser == model.receptive_field()

    def chain(x):
        z = model(codec.model.encoder(x))
        return codec.model.decoder(codec.model.quantizer(z, n_quantizers=codec.n_codebooks)[0])

    frames, first = 90, 45 * HOP
    last = first + 3 * HOP - 1
    assert gradient_span(chain, frames * HOP, first, last) == (first - field.context,
                                                              last + field.lookahead)
    f = 40
    assert gradient_span(codec.model.encoder, frames * HOP, f, f) == (
        f * HOP - field.encoder_past, (f + 1) * HOP - 1 + field.encoder_future)


# --- the stream -------------------------------------------------------------------------------


@pytest.mark.parametrize("block_frames, push", [(1, 700), (10, 3201), (7, 50_000), (3, 1)])
def test_streamed_equals_whole_signal(codec, enhancer, block_frames, push):
    x = speechlike(0.6 if push == 1 else 3.0, 7)[: None if push != 1 else 9_611]
    whole = enhance_whole(enhancer, x)
    stream = StreamDenoiser.for_engine(enhancer, block_frames=block_frames)
    y = stream_signal(stream, x, push)
    assert y.shape == x.shape and y.dtype == np.float32
    assert snr_db(whole, y) >= API_SNR_DB
    g = stream.geometry
    assert g.block == block_frames * HOP and g.latency == g.block + g.lookahead
    assert stream.latency_ms == pytest.approx(1000 * g.latency / SR)


def test_output_never_lags_more_than_the_latency(enhancer):
    stream = StreamDenoiser.for_engine(enhancer, block_frames=4)
    pushed = returned = 0
    for size in np.random.default_rng(0).integers(1, 2000, 60):
        returned += stream.push(np.zeros(int(size), np.float32)).shape[0]
        pushed += int(size)
        assert returned > pushed - stream.latency
        assert returned <= pushed and returned % stream.geometry.block == 0
    assert returned + stream.flush().shape[0] == pushed


def test_fixed_delay_returns_as_many_samples_as_pushed(enhancer):
    x = speechlike(2.5, 8)
    whole = enhance_whole(enhancer, x)
    stream = StreamDenoiser.for_engine(enhancer, block_ms=100, fixed_delay=True)
    outs = []
    for i in range(0, len(x), 999):
        piece = x[i:i + 999]
        outs.append(stream.push(piece))
        assert outs[-1].shape == piece.shape
    tail = stream.flush()
    assert tail.shape == (stream.latency,)
    y = np.concatenate(outs + [tail])
    assert not np.any(y[:stream.latency])
    assert snr_db(whole, y[stream.latency:]) >= API_SNR_DB


def test_channels_are_streamed_independently(enhancer):
    x = np.stack([speechlike(2.0, 9), speechlike(2.0, 10)])
    stream = StreamDenoiser.for_engine(enhancer, block_frames=5, channels=2)
    y = stream_signal(stream, x, 1234)
    whole = enhance_whole(enhancer, x)
    assert y.shape == x.shape
    assert min(snr_db(whole[c], y[c]) for c in range(2)) >= API_SNR_DB


@pytest.mark.parametrize("n", [0, 1, 319, 321, 4000])
def test_short_streams(enhancer, n):
    x = speechlike(0.5, 11)[:n]
    stream = StreamDenoiser.for_engine(enhancer, block_frames=10)
    y = stream_signal(stream, x, 100)
    assert y.shape == (n,)
    if n:
        assert snr_db(enhance_whole(enhancer, x), y) >= API_SNR_DB
    stream.reset()
    assert stream_signal(stream, x, 7).shape == (n,)


def test_stream_errors_are_clear(enhancer):
    with pytest.raises(StreamError, match="not a positive multiple of the codec hop"):
        block_frames_for(30, SR, HOP)
    with pytest.raises(StreamError, match="multiple of the codec hop"):
        StreamDenoiser.for_engine(enhancer, block_ms=10)
    assert block_frames_for(60, SR, HOP) == 3
    stream = StreamDenoiser.for_engine(enhancer, block_frames=2)
    with pytest.raises(StreamError, match=r"\[n\] \(mono\)"):
        stream.push(np.zeros((2, 10), np.float32))
    with pytest.raises(StreamError, match="NaN"):
        stream.push(np.full(10, np.nan, np.float32))
    stream.flush()
    with pytest.raises(StreamError, match="reset"):
        stream.push(np.zeros(10, np.float32))
    with pytest.raises(StreamError, match="does not fit the engine"):
        StreamDenoiser(enhancer, StreamGeometry(SR, 160, 160, 0, 0))


def test_global_grn_checkpoint_still_loads_and_streams(tmp_path, codec):
    """Checkpoints trained before `grn: none` (global statistics) load and run; the stream
    then uses their convolutions' reach and says it is approximate."""
    torch.manual_seed(2)
    old = Denoiser(codec.latent_dim, width=16, depth=2)  # the class default: grn "global"
    with torch.no_grad():
        torch.nn.init.normal_(old.head.weight, std=0.05)
        for block in old.blocks:
            block.grn.gamma.normal_(0.0, 0.5)
    path = save_checkpoint(tmp_path / "best.pt", old, codec.identity)
    enh = load_enhancer(DenoiseConfig(checkpoint=str(path)), TINY, codec=codec)
    assert enh.denoiser.model_args["grn"] == "global"
    stream = StreamDenoiser.for_engine(enh, block_frames=5)
    field = codec_chain_field(codec, enh.denoiser)
    assert not field.exact and field.denoiser == 6 and "approximate" in field.describe()
    x = speechlike(2.0, 12)
    y = stream_signal(stream, x, 2000)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert snr_db(enhance_whole(enh, x), y) > 10  # close, not exact


# --- PCM byte streams -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["s16", "s32", "f32"])
def test_pcm_round_trip(encoding):
    fmt = PcmFormat(encoding, SR, 2)
    x = np.clip(np.random.default_rng(0).standard_normal((2, 1000)) * 0.3, -1, 0.99)
    x = x.astype(np.float32)
    y = fmt.decode(fmt.encode(x))
    atol = {"s16": 1 / 32768, "s32": 1e-7, "f32": 0.0}[encoding]
    np.testing.assert_allclose(y, x, atol=atol)


def test_wav_header_of_a_pipe_writer_is_read_to_the_end():
    """0xFFFFFFFF sizes (a writer that could not seek) mean: read until the stream ends."""
    buf = io.BytesIO()
    fmt = PcmFormat("s16", 22050, 1)
    writer = PcmWriter(buf, fmt, wav=True)
    x = (0.5 * np.sin(np.arange(5000) / 9.0)).astype(np.float32)[None]
    writer.write(x)  # BytesIO can seek, but the header is patched only on close()
    data = buf.getvalue()
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=333)
    got, size = read_wav_header(stream)
    assert got == fmt and size is None
    blocks = list(PcmReader(stream, got, size).blocks(max_bytes=101))  # odd: partial frames
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), x, atol=1 / 32768)
    writer.close()
    assert struct.unpack("<I", buf.getvalue()[40:44])[0] == 2 * 5000
    read, rate = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")
    assert rate == 22050 and read.shape == (5000,)


def test_a_stop_request_ends_a_stalled_pipe():
    """A reader waiting on an idle pipe notices a stop request (Ctrl-C / SIGTERM) at once."""
    import time

    r, w = os.pipe()
    fmt = PcmFormat("s16", SR, 1)
    os.write(w, fmt.encode(np.zeros((1, 100), np.float32)))  # then the writer stalls
    asked = []
    reader = PcmReader(os.fdopen(r, "rb", buffering=0), fmt,
                       should_stop=lambda: asked.append(1) or len(asked) > 2)
    start = time.perf_counter()
    blocks = list(reader.blocks())
    assert sum(b.shape[1] for b in blocks) == 100 and len(asked) == 3
    assert time.perf_counter() - start < 5.0
    os.close(w)


def test_non_wav_input_is_refused_clearly():
    with pytest.raises(PcmError, match="not a WAV stream.*--format"):
        read_wav_header(io.BytesIO(b"ID3\x03" + bytes(60)))


def test_stream_file_raw_pcm_and_resampling(tmp_path, enhancer):
    """Raw f32 at 48 kHz in → raw f32 at 48 kHz out, same length (resampled to 16 kHz and
    back); raw s16 at 16 kHz equals the whole-signal output."""
    x48 = np.repeat(speechlike(1.5, 13), 3) * 0.5
    src = tmp_path / "in.f32"
    src.write_bytes(x48.astype("<f4").tobytes())
    notes = []
    summary = stream_file(enhancer, str(src), str(tmp_path / "out.f32"),
                          StreamOptions(raw_format="f32le", rate=48000, block_ms=100),
                          notify=notes.append)
    y = np.frombuffer((tmp_path / "out.f32").read_bytes(), "<f4")
    assert y.shape == x48.shape and np.all(np.isfinite(y)) and np.std(y) > 0
    assert "latency" in notes[0] and "48000 Hz in" in notes[0]
    assert summary.input_seconds == pytest.approx(1.5)

    x = speechlike(1.5, 14)
    pcm = PcmFormat("s16", SR, 1)
    (tmp_path / "in.s16").write_bytes(pcm.encode(x[None]))
    stream_file(enhancer, str(tmp_path / "in.s16"), str(tmp_path / "out.s16"),
                StreamOptions(raw_format="s16le", rate=SR), notify=notes.append)
    y16 = pcm.decode((tmp_path / "out.s16").read_bytes())[0]
    x16 = pcm.decode(pcm.encode(x[None]))[0]
    assert snr_db(enhance_whole(enhancer, x16), y16) >= CLI_SNR_DB
    assert not list(tmp_path.glob(".*.tmp"))


def test_stream_option_errors(tmp_path, enhancer):
    src = tmp_path / "in.s16"
    src.write_bytes(bytes(640))
    with pytest.raises(StreamError, match="give --rate"):
        stream_file(enhancer, str(src), str(tmp_path / "o"), StreamOptions(raw_format="s16le"))
    with pytest.raises(StreamError, match="--rate is for raw PCM"):
        stream_file(enhancer, str(src), str(tmp_path / "o"), StreamOptions(rate=8000))
    with pytest.raises(StreamError, match="no such file"):
        stream_file(enhancer, str(tmp_path / "missing.wav"), str(tmp_path / "o"),
                    StreamOptions())
    assert not (tmp_path / "o").exists()


# --- the command line -------------------------------------------------------------------------


def run_cli(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "cleancodec", *args], input=stdin,
                          capture_output=True, cwd=REPO, env=env, timeout=120)


def test_cli_stream_pipes_wav_through_stdin_and_stdout(tmp_path, codec):
    """`cleancodec denoise --stream - -` with a WAV piped in (header length unknown, as from
    sox): stdout is exactly one WAV whose samples equal whole-signal processing."""
    model = local_denoiser(codec, seed=3)
    ckpt = save_checkpoint(tmp_path / "best.pt", model, codec.identity)
    x = speechlike(2.0, 15)
    pcm = PcmFormat("s16", SR, 1)
    buf = io.BytesIO()
    PcmWriter(buf, pcm).write(x[None])  # sizes left at 0xFFFFFFFF: a pipe writer's header
    proc = run_cli(["denoise", "--stream", "-", "-", "--codec", "random", "--checkpoint",
                    str(ckpt), "--threads", "1", "--block-ms", "120", "codec.random_arch=tiny"],
                   stdin=buf.getvalue())
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "block 120 ms + lookahead 480 ms = latency 600 ms" in err
    out = io.BytesIO(proc.stdout)
    fmt, size = read_wav_header(out)
    assert fmt == pcm and size is None  # stdout is a pipe: no patched sizes
    y = np.concatenate(list(PcmReader(out, fmt).blocks()), axis=1)[0]
    assert y.shape == x.shape  # nothing but the WAV on stdout
    whole = enhance_whole(Enhancer(codec, model), pcm.decode(pcm.encode(x[None]))[0])
    assert snr_db(whole, y) >= CLI_SNR_DB


def test_cli_stream_errors(tmp_path):
    raw = tmp_path / "in.raw"
    raw.write_bytes(bytes(3200))
    proc = run_cli(["denoise", "--stream", str(raw), "-", "--format", "s16le", "--bypass",
                    "--codec", "random", "codec.random_arch=tiny"])
    assert proc.returncode != 0 and b"give --rate" in proc.stderr and proc.stdout == b""
    proc = run_cli(["denoise", "--stream", str(raw), "-", "--format", "s16le", "--rate",
                    "16000", "--block-ms", "50", "--bypass", "--codec", "random",
                    "codec.random_arch=tiny"])
    assert proc.returncode != 0 and b"multiple of the codec hop" in proc.stderr
    assert proc.stdout == b""
    proc = run_cli(["denoise", str(raw), "--block-ms", "40"])
    assert proc.returncode != 0 and b"apply to --stream only" in proc.stderr


# modules that only the ONNX export and engine need; the torch engine must load none of them
EXPORT_MODULES = ("onnx", "onnxruntime", "onnxscript", "torch.onnx", "cleancodec.infer.export",
                  "cleancodec.infer.onnx_engine")
TORCH_PATH_SCRIPT = """
import sys
import numpy as np
import soundfile as sf
from click.testing import CliRunner
from cleancodec.cli import main

src, root = sys.argv[1], sys.argv[2]
common = ["--bypass", "--codec", "random", "--threads", "1", "codec.random_arch=tiny"]
for args in (["denoise", src, root + "/files.wav", "--quiet"],
             ["denoise", "--stream", src, root + "/stream.wav", "--block-ms", "100"]):
    result = CliRunner().invoke(main, args + common)
    assert result.exit_code == 0, result.output
print(" ".join(sorted(m for m in sys.modules if m in set(sys.argv[3:]))))
"""


def test_torch_engine_imports_no_export_code(tmp_path):
    """`cleancodec denoise` (files and --stream) with the torch engine never imports onnx,
    onnxruntime or the export modules (a fresh interpreter, so other tests' imports don't
    count)."""
    src = tmp_path / "in.wav"
    sf.write(src, speechlike(0.6, 2), SR)
    proc = subprocess.run([sys.executable, "-c", TORCH_PATH_SCRIPT, str(src), str(tmp_path),
                           *EXPORT_MODULES], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "files.wav").is_file() and (tmp_path / "stream.wav").is_file()
    assert proc.stdout.strip().splitlines()[-1:] in ([], [""]), proc.stdout

"""infer.serve without a browser: checkpoint listing, input checks, the denoise path equals the
command line's, live sessions equal whole-stream processing."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio", reason="the app's extra is not installed (pip install -e '.[serve]')")

from cleancodec.core.codec import load_codec  # noqa: E402
from cleancodec.infer.denoise import DenoiseConfig, snr_db  # noqa: E402
from cleancodec.infer.fileio import Resampler  # noqa: E402
from cleancodec.infer.run import run_denoise  # noqa: E402
from cleancodec.infer.serve import (  # noqa: E402
    BYPASS_CHOICE,
    DenoiseService,
    LiveSession,
    ServeConfig,
    ServeError,
    run_checkpoints,
)
from cleancodec.infer.stateful import StatefulStream  # noqa: E402
from cleancodec.infer.stream import stream_signal  # noqa: E402
from tests.helpers import (  # noqa: E402
    SR,
    TINY_CODEC,
    local_denoiser,
    save_checkpoint,
    speechlike,
)

SAME_DB = 90.0  # outputs of the same path agree to float rounding


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY_CODEC)


@pytest.fixture(scope="module")
def runs(codec, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    save_checkpoint(root / "old" / "best.pt", local_denoiser(codec, seed=1), codec.identity)
    time.sleep(0.01)
    save_checkpoint(root / "demo" / "train" / "best.pt", local_denoiser(codec, seed=2),
                    codec.identity)
    return root


@pytest.fixture(scope="module")
def service(codec, runs, tmp_path_factory):
    cfg = DenoiseConfig(runs_dir=str(runs), chunk_frames=60, crossfade_frames=2)
    return DenoiseService(cfg, TINY_CODEC, ServeConfig(max_seconds=5.0),
                          tmp_path_factory.mktemp("work"), codec)


def test_checkpoints_newest_per_run_first(runs, service):
    found = run_checkpoints(runs)
    assert found == [runs / "demo" / "train" / "best.pt", runs / "old" / "best.pt"]
    values = [value for _, value in service.checkpoint_choices()]
    assert values[0] == service.default_checkpoint == str(found[0])
    assert values == [str(p) for p in found] + [BYPASS_CHOICE]
    assert run_checkpoints(runs / "missing") == []


def test_bad_inputs_are_refused_with_a_reason(service, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    long = tmp_path / "long.flac"
    sf.write(long, np.zeros(6 * SR, np.float32), SR)
    with pytest.raises(ServeError, match="No audio"):
        service.check_input(None)
    with pytest.raises(ServeError, match=r"notes\.wav: not a readable audio file") as info:
        service.check_input(text)
    assert str(tmp_path) not in str(info.value)  # the upload folder is not shown
    with pytest.raises(ServeError, match="holds no audio"):
        service.check_input(empty)
    with pytest.raises(ServeError, match=r"6 s is longer than this server accepts \(5 s"):
        service.check_input(long)
    assert service.check_input(write_wav_at(tmp_path / "ok.wav", 1.0)) == pytest.approx(1.0)


def write_wav_at(path, seconds: float, sr: int = SR):
    x = speechlike(seconds, seed=3, sr=sr)
    sf.write(path, np.stack([x, 0.5 * x], axis=1), sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize("checkpoint_index, mix", [(0, 0.0), (1, 0.3)])
def test_denoise_file_equals_the_command_line(service, runs, tmp_path, checkpoint_index, mix):
    """The page's file is ``cleancodec denoise``'s (stereo 22.05 kHz PCM_16, mix, chunks)."""
    noisy = write_wav_at(tmp_path / "in.wav", 2.5, sr=22050)
    checkpoint = [value for _, value in service.checkpoint_choices()][checkpoint_index]
    page = service.denoise_file(noisy, tmp_path, checkpoint, mix)
    cli = tmp_path / "cli.wav"
    run_denoise(noisy, cli, None, [f"denoise.checkpoint='{checkpoint}'", f"denoise.mix={mix}",
                                   "denoise.chunk_frames=60", "denoise.crossfade_frames=2",
                                   "codec.weights=random", "codec.random_arch=tiny",
                                   "codec.num_threads=1"], progress=False)
    a, sr_a = sf.read(page, always_2d=True)
    b, sr_b = sf.read(cli, always_2d=True)
    assert sr_a == sr_b == 22050 and a.shape == b.shape
    assert sf.info(page).subtype == "PCM_16"
    assert snr_db(b, a) >= SAME_DB


def test_bypass_differs_from_the_denoiser(service, tmp_path):
    noisy = write_wav_at(tmp_path / "in.wav", 1.5)
    denoised, _ = sf.read(service.denoise_file(noisy, tmp_path, None, 0.0))
    codec_alone, _ = sf.read(service.denoise_file(noisy, tmp_path, BYPASS_CHOICE, 0.0, "_c"))
    assert snr_db(codec_alone, denoised) < 40.0


def test_request_folders_expire(service):
    old = service._request_dir()
    past = time.time() - service.serve.keep_minutes * 60 - 1
    os.utime(old, (past, past))
    new = service._request_dir()
    assert new.is_dir() and not old.exists()


def test_live_session_equals_whole_stream(service):
    """48 kHz int16 microphone chunks → 16 kHz denoised = the stream run on the resampled
    signal (the session only resamples and accumulates)."""
    mic = (speechlike(2.0, seed=4, sr=48000) * 20000).astype(np.int16)
    assert isinstance(service.live_stream(None), StatefulStream)  # grn none: layer state
    session = LiveSession(service.live_stream(None), None)
    pieces = [session.push(48000, mic[i:i + 9600]) for i in range(0, len(mic), 9600)]
    last, take = session.finish()
    assert np.array_equal(np.concatenate(pieces + [last]), take)
    to16 = Resampler(48000, SR, 1)
    x16 = np.concatenate([to16.push(mic[None].astype(np.float32) / 32768.0), to16.flush()], 1)
    reference = stream_signal(service.live_stream(None), x16[0], 3200)
    assert len(take) == len(reference)
    assert snr_db(reference, take) >= SAME_DB
    with pytest.raises(ServeError, match="changed rate"):
        fresh = LiveSession(service.live_stream(None), None)
        fresh.push(48000, mic[:480])
        fresh.push(44100, mic[:441])


def test_live_timing_says_whether_it_keeps_up(service):
    timing = service.time_live_block()
    assert timing.seconds > 0 and timing.block_seconds == pytest.approx(0.2)
    assert timing.keeps_up == (timing.rtf <= service.serve.live_headroom)
    assert "real-time factor" in timing.describe()


def test_serve_config_refuses_bad_values():
    from cleancodec.core.config import ConfigError

    with pytest.raises(ConfigError, match="serve.max_seconds"):
        ServeConfig(max_seconds=0)
    with pytest.raises(ConfigError, match="serve.port"):
        ServeConfig(port=70000)


def test_cli_refuses_bad_arguments_before_loading_models():
    from click.testing import CliRunner

    from cleancodec.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--codec", "random", "train.steps=3"])
    assert result.exit_code != 0 and "train.steps" in result.output
    result = runner.invoke(main, ["serve", "--codec", "random", "--max-seconds", "0"])
    assert result.exit_code != 0 and "--max-seconds" in result.output
    help_text = runner.invoke(main, ["serve", "--help"]).output
    assert "--host" in help_text and "/denoise" in help_text

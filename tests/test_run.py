"""infer.run: files and folders — formats, rates, channels, tree, bad files, streaming, CLI."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
import soxr
from click.testing import CliRunner

from cleancodec.cli import main
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, load_codec
from cleancodec.infer.denoise import DenoiseConfig, Enhancer, chunk_spec, enhance_signal
from cleancodec.infer.run import REPORT_NAME, RunError, default_output, denoise_path, plan_tasks
from cleancodec.trainer.checkpoint import FORMAT_VERSION, save_atomic
from cleancodec.trainer.models import Denoiser

TINY = CodecConfig(weights="random", random_arch="tiny", random_seed=0, num_threads=1)
SMALL_CHUNKS = {"chunk_frames": 60, "crossfade_frames": 2}  # context: 18 frames (tiny codec)


def tone(sr: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    """``[T x C]`` float32: a different gated harmonic tone per channel, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    cols = []
    for c in range(channels):
        f0 = 120 + 60 * c + rng.uniform(0, 20)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
        x *= (np.sin(2 * np.pi * (1.3 + c) * t) > -0.3)
        cols.append(0.5 * x / np.max(np.abs(x)) + 0.003 * rng.standard_normal(len(t)))
    return np.stack(cols, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY)


@pytest.fixture(scope="module")
def bypass(codec):
    return Enhancer(codec, None)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_state(root):
    return {p.relative_to(root).as_posix(): (digest(p), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- formats, tree, input safety --------------------------------------------------------------

FORMATS = [(sr, ch, sub) for sr in (8000, 16000, 44100, 48000) for ch in (1, 2)
           for sub in ("PCM_16", "PCM_24", "FLOAT")]


def test_length_rate_channels_format_preserved_and_tree_mirrored(tmp_path, bypass):
    src = tmp_path / "in"
    for i, (sr, ch, sub) in enumerate(FORMATS):
        path = src / f"sr{sr}" / f"ch{ch}_{sub}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(sr, 0.61 + 0.013 * i, ch, i), sr, subtype=sub)
    (src / "deep" / "er").mkdir(parents=True)
    sf.write(src / "deep" / "er" / "x.flac", tone(44100, 1.1, 2), 44100, subtype="PCM_24")
    sf.write(src / "y.ogg", tone(48000, 1.0, 1), 48000, subtype="VORBIS")
    (src / "notes.txt").write_text("not audio: ignored")
    before = tree_state(src)

    summary = denoise_path(src, tmp_path / "out", bypass, DenoiseConfig(**SMALL_CHUNKS),
                           progress=False)

    assert tree_state(src) == before  # inputs untouched, nothing added to the input tree
    assert summary.count("ok") == len(FORMATS) + 2 and not summary.failed
    for path in src.rglob("*"):
        if path.suffix not in (".wav", ".flac", ".ogg"):
            continue
        out = tmp_path / "out" / path.relative_to(src)
        a, b = sf.info(str(path)), sf.info(str(out))
        assert (b.samplerate, b.channels, b.format, b.subtype) == \
               (a.samplerate, a.channels, a.format, a.subtype), path
        if a.format != "OGG":  # Vorbis frame counts are approximate by nature
            assert b.frames == a.frames, path
        y, _ = sf.read(out, always_2d=True)
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 1e-3
    assert not (tmp_path / "out" / "notes.txt").exists()
    assert not list((tmp_path / "out").rglob("*.tmp"))
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert next(iter(report)) == "warning" and report["warning"] == RANDOM_INIT_BANNER
    assert report["counts"] == {"ok": len(FORMATS) + 2, "skipped": 0, "failed": 0}


def test_output_inside_or_equal_to_input_is_refused(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(16000, 0.5, 1), 16000)
    for bad in (src, src / "sub" / "out"):
        with pytest.raises(RunError, match="inside"):
            plan_tasks(src, bad)
    with pytest.raises(RunError, match="overwrite"):
        plan_tasks(src / "a.wav", src / "a.wav")
    with pytest.raises(RunError, match="overwrite"):
        plan_tasks(src / "a.wav", src)  # OUTPUT is the folder holding the input file
    with pytest.raises(RunError, match="no such"):
        plan_tasks(tmp_path / "missing", tmp_path / "o")
    assert plan_tasks(src / "a.wav", tmp_path / "o.wav")[0].output == tmp_path / "o.wav"
    assert default_output(src) == tmp_path / "in_denoised"
    assert default_output(src / "a.wav") == src / "a_denoised.wav"


def test_skip_existing_leaves_outputs_alone(tmp_path, bypass):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(src / name, tone(16000, 0.5, 1), 16000)
    out = tmp_path / "out"
    out.mkdir()
    sf.write(out / "a.wav", np.zeros(10, np.float32), 16000)
    kept = digest(out / "a.wav")
    summary = denoise_path(src, out, bypass, DenoiseConfig(skip_existing=True), progress=False)
    assert [r.status for r in summary.results] == ["skipped", "ok"]
    assert digest(out / "a.wav") == kept
    summary = denoise_path(src, out, bypass, DenoiseConfig(), progress=False)
    assert summary.count("ok") == 2 and sf.info(str(out / "a.wav")).frames == 8000


def test_output_sr(tmp_path, bypass):
    sf.write(tmp_path / "a.wav", tone(44100, 1.3, 2), 44100, subtype="PCM_24")
    denoise_path(tmp_path / "a.wav", tmp_path / "o.wav", bypass,
                 DenoiseConfig(output_sr=16000), progress=False)
    info = sf.info(str(tmp_path / "o.wav"))
    assert (info.samplerate, info.channels) == (16000, 2)
    assert info.frames == round(int(44100 * 1.3) * 16000 / 44100)


# --- what the samples are ---------------------------------------------------------------------


def test_streamed_file_equals_in_memory_chunked_processing(tmp_path, bypass):
    x = tone(16000, 9.0, 1)[:, 0]
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    cfg = DenoiseConfig(read_block_seconds=0.37, **SMALL_CHUNKS)
    denoise_path(tmp_path / "a.wav", tmp_path / "o.wav", bypass, cfg, progress=False)
    y, _ = sf.read(tmp_path / "o.wav", dtype="float32")
    ref = enhance_signal(bypass, x, chunk_spec(cfg, bypass))
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_resampled_path_equals_resample_enhance_resample(tmp_path, bypass):
    x = tone(44100, 4.0, 1)[:, 0]
    sf.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    cfg = DenoiseConfig(read_block_seconds=0.5, **SMALL_CHUNKS)
    denoise_path(tmp_path / "a.wav", tmp_path / "o.wav", bypass, cfg, progress=False)
    y, _ = sf.read(tmp_path / "o.wav", dtype="float32")
    x16 = soxr.resample(x, 44100, 16000, quality="HQ")
    ref = soxr.resample(enhance_signal(bypass, x16, chunk_spec(cfg, bypass)), 16000,
                        44100, quality="HQ")
    assert len(y) == len(x)
    np.testing.assert_allclose(y, ref[:len(y)], atol=1e-5)


def test_channels_are_denoised_independently(tmp_path, bypass):
    x = tone(16000, 2.0, 2)
    sf.write(tmp_path / "st.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "left.wav", x[:, 0], 16000, subtype="FLOAT")
    for name in ("st", "left"):
        denoise_path(tmp_path / f"{name}.wav", tmp_path / f"{name}_o.wav", bypass,
                     DenoiseConfig(), progress=False)
    st, _ = sf.read(tmp_path / "st_o.wav", dtype="float32")
    left, _ = sf.read(tmp_path / "left_o.wav", dtype="float32")
    np.testing.assert_allclose(st[:, 0], left, atol=1e-5)
    assert not np.allclose(st[:, 0], st[:, 1], atol=1e-3)


def test_mix_blends_the_dry_input(tmp_path, bypass):
    x = tone(22050, 1.5, 2)
    sf.write(tmp_path / "a.wav", x, 22050, subtype="FLOAT")
    outs = {}
    for mix in (0.0, 0.5, 1.0):
        o = tmp_path / f"o{mix}.wav"
        denoise_path(tmp_path / "a.wav", o, bypass, DenoiseConfig(mix=mix), progress=False)
        outs[mix], _ = sf.read(o, dtype="float32", always_2d=True)
    np.testing.assert_allclose(outs[1.0], x, atol=1e-6)
    np.testing.assert_allclose(outs[0.5], 0.5 * (outs[0.0] + x), atol=1e-5)
    assert np.max(np.abs(outs[0.0] - x)) > 0.01


def test_batches_across_files_give_the_same_outputs(tmp_path, bypass):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        sf.write(src / f"f{i}.wav", tone(16000, 1.0 + 0.9 * (i % 2), 1, i), 16000,
                 subtype="FLOAT")
    res = {}
    for bs in (1, 4):
        out = tmp_path / f"out{bs}"
        denoise_path(src, out, bypass, DenoiseConfig(batch_size=bs, **SMALL_CHUNKS),
                     progress=False)
        res[bs] = [sf.read(out / f"f{i}.wav", dtype="float32")[0] for i in range(5)]
    for a, b in zip(res[1], res[4]):
        np.testing.assert_allclose(a, b, atol=1e-5)


# --- bad files and the command ----------------------------------------------------------------


def make_checkpoint(path, codec, identity=None):
    model = Denoiser(codec.latent_dim, width=16, depth=1)
    save_atomic({"format_version": FORMAT_VERSION, "model_args": dict(model.model_args),
                 "denoiser": model.state_dict(), "step": 3, "config": {},
                 "codec_identity": identity or codec.identity, "val": {}}, path)
    return path


def test_bad_files_are_reported_the_rest_goes_on_and_the_exit_code_says_so(tmp_path, codec):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "good.wav", tone(16000, 1.0, 1), 16000)
    sf.write(src / "sub" / "good2.flac", tone(48000, 1.0, 2), 48000)
    (src / "text.wav").write_text("this is not audio")
    sf.write(src / "empty.wav", np.zeros((0,), np.float32), 16000)
    late_nan = tone(16000, 12.0, 1)[:, 0]
    late_nan[-100:] = np.nan  # found only after several blocks were already processed
    sf.write(src / "nan.wav", late_nan, 16000, subtype="FLOAT")
    (src / "trunc.wav").write_bytes((src / "good.wav").read_bytes()[:20])
    ckpt = make_checkpoint(tmp_path / "best.pt", codec)

    result = CliRunner().invoke(main, ["denoise", str(src), str(tmp_path / "out"), "--conf",
                                       "conf/tiny.yaml", "--checkpoint", str(ckpt), "--quiet"])

    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == RANDOM_INIT_BANNER
    assert "denoised 2 file(s), skipped 0, failed 4" in result.output
    reasons = {"text.wav": "decode", "empty.wav": "empty", "nan.wav": "NaN",
               "trunc.wav": "decode"}
    for name, reason in reasons.items():
        line = next(ln for ln in lines if "FAILED" in ln and name in ln)
        assert reason in line
        assert not (tmp_path / "out" / name).exists()
    assert (tmp_path / "out" / "good.wav").is_file()
    assert (tmp_path / "out" / "sub" / "good2.flac").is_file()
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_command_succeeds_on_good_input_and_refuses_a_foreign_checkpoint(tmp_path, codec):
    sf.write(tmp_path / "a.wav", tone(16000, 1.0, 1), 16000)
    ckpt = make_checkpoint(tmp_path / "best.pt", codec)
    base = ["denoise", str(tmp_path / "a.wav"), "--conf", "conf/tiny.yaml", "--quiet",
            "--checkpoint", str(ckpt)]
    ok = CliRunner().invoke(main, base)
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "a_denoised.wav").is_file()
    other = make_checkpoint(tmp_path / "other.pt", codec, dict(codec.identity, seed=5))
    foreign = CliRunner().invoke(main, base[:-1] + [str(other)])
    assert foreign.exit_code == 1
    assert "allow-codec-mismatch" in foreign.output and "seed 5" in foreign.output
    allowed = CliRunner().invoke(main, base[:-1] + [str(other), "--allow-codec-mismatch",
                                                    str(tmp_path / "b.wav")])
    assert allowed.exit_code == 0, allowed.output
    assert sf.info(str(tmp_path / "b.wav")).frames == 16000


# --- operations: full disk, locked output folder -----------------------------------------------

TMPFS_BYTES = 64 * 1024  # room for the lock file, not for one second of 16-bit stereo audio


@pytest.fixture
def full_disk(tmp_path):
    """A tiny tmpfs mounted for the test (needs mount rights: root in CI)."""
    import subprocess

    mnt = tmp_path / "tiny_disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_denoise_onto_a_full_disk_says_no_space_and_leaves_nothing(tmp_path, full_disk):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "long.wav", tone(48000, 3.0, 2), 48000, subtype="FLOAT")
    result = CliRunner().invoke(main, ["denoise", str(src / "long.wav"),
                                       str(full_disk / "out.wav"), "--conf", "conf/tiny.yaml",
                                       "--bypass", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "no space left on device" in result.output and "out.wav" in result.output
    assert "LibsndfileError" not in result.output and "System error" not in result.output
    assert not [p for p in full_disk.iterdir() if p.suffix == ".wav" or "tmp" in p.name]


def test_a_second_denoise_into_a_held_output_folder_is_refused(tmp_path):
    import os
    import socket

    from cleancodec.core.dirlock import DirectoryLock

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sf.write(src / "a.wav", tone(16000, 1.0, 1), 16000)
    with DirectoryLock(out, "denoise"):
        result = CliRunner().invoke(main, ["denoise", str(src), str(out), "--conf",
                                           "conf/tiny.yaml", "--bypass", "--quiet"])
    assert result.exit_code != 0
    assert f"pid {os.getpid()}" in result.output and socket.gethostname() in result.output
    assert not (out / "a.wav").exists()
    again = CliRunner().invoke(main, ["denoise", str(src), str(out), "--conf", "conf/tiny.yaml",
                                      "--bypass", "--quiet"])
    assert again.exit_code == 0, again.output
    assert (out / "a.wav").is_file()

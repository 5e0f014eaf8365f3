"""core.audio: any format / rate / channels in, clear errors for bad files, atomic writes, the
one folder walk."""
import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.audio import (
    AudioError,
    list_audio_files,
    read_audio,
    read_audio_channels,
    resample,
    write_audio_atomic,
)


def _tone(sr, seconds=1.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("sr,fmt,subtype", [(8000, "wav", "PCM_16"), (44100, "flac", "PCM_24"),
                                            (48000, "wav", "FLOAT"), (16000, "ogg", "VORBIS")])
def test_read_any_format_to_mono_16k(tmp_path, sr, fmt, subtype):
    p = tmp_path / f"x.{fmt}"
    sf.write(p, _tone(sr, channels=2), sr, subtype=subtype)
    y = read_audio(p, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 2
    # energy at 440 Hz survives resampling
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 440) < 5


def test_bad_inputs_name_file_and_reason(tmp_path):
    (tmp_path / "text.wav").write_text("not audio at all")
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    nan = np.full(1000, np.nan, np.float32)
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    good = tmp_path / "good.wav"
    sf.write(good, _tone(16000), 16000)
    raw = good.read_bytes()
    (tmp_path / "trunc.wav").write_bytes(raw[:30])
    cases = {"text.wav": "decode", "empty.wav": "empty", "silent.wav": "silent",
             "nan.wav": "NaN", "trunc.wav": ""}
    for name, reason in cases.items():
        with pytest.raises(AudioError) as err:
            read_audio(tmp_path / name, 16000)
        assert name in str(err.value) and reason in str(err.value)
    with pytest.raises(AudioError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav", 16000)
    # silent files are fine where allowed
    assert read_audio(tmp_path / "silent.wav", 16000, allow_silent=True).shape == (16000,)


def test_channels_and_resample_shapes(tmp_path):
    p = tmp_path / "st.wav"
    sf.write(p, _tone(22050, channels=2), 22050)
    x, sr = read_audio_channels(p)
    assert x.shape == (2, 22050) and sr == 22050
    y = resample(x, 22050, 16000)
    assert y.shape[0] == 2 and abs(y.shape[1] - 16000) <= 2


def test_atomic_write_leaves_no_temp_and_keeps_old_on_failure(tmp_path):
    p = tmp_path / "out" / "a.wav"
    write_audio_atomic(p, _tone(16000), 16000, subtype="PCM_16")
    assert sf.info(p).samplerate == 16000
    before = p.read_bytes()
    with pytest.raises(ValueError):
        write_audio_atomic(p, np.zeros((2, 2, 2), np.float32), 16000)
    assert p.read_bytes() == before
    assert [f.name for f in p.parent.iterdir()] == ["a.wav"]


def test_one_definition_of_an_audio_file_and_streamed_reads(tmp_path):
    from cleancodec.core.audio import (
        audio_extensions,
        is_audio_path,
        list_audio_files,
        open_audio,
        read_block,
        read_mono,
    )

    assert {"wav", "flac", "ogg", "opus", "aif"} <= audio_extensions()
    assert not {"raw", "mat5", "txt"} & audio_extensions()
    assert is_audio_path("a/B.WAV") and not is_audio_path("notes.txt")
    x = _tone(16000, channels=2)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "st.flac", x, 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    assert list_audio_files(tmp_path) == [tmp_path / "sub" / "st.flac"]
    mono, sr = read_mono(tmp_path / "sub" / "st.flac", 100, 300)
    assert sr == 16000 and mono.shape == (200,)
    handle = open_audio(tmp_path / "sub" / "st.flac")
    blocks = []
    while (block := read_block(handle, "st.flac", 7000)).shape[1]:
        blocks.append(block)
    handle.close()
    assert [b.shape for b in blocks] == [(2, 7000), (2, 7000), (2, 2000)]
    with pytest.raises(AudioError, match="notes.txt: cannot decode as audio"):
        open_audio(tmp_path / "notes.txt")


# --- the one folder walk -------------------------------------------------------------------------


def _touch_wav(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, np.float32), 16000)


def test_walk_skips_hidden_files_and_folders(tmp_path):
    _touch_wav(tmp_path / "b.wav")
    _touch_wav(tmp_path / "A" / "c.flac")
    _touch_wav(tmp_path / "._b.wav")  # macOS resource fork
    _touch_wav(tmp_path / ".state" / "d.wav")
    _touch_wav(tmp_path / "A" / ".cache" / "deep" / "e.wav")
    assert [p.relative_to(tmp_path).as_posix() for p in list_audio_files(tmp_path)] == [
        "A/c.flac", "b.wav"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_audio_files(tmp_path / "b.wav")


def test_walk_follows_a_symlinked_folder_once_and_ends_a_cycle(tmp_path):
    outside = tmp_path / "outside"
    _touch_wav(outside / "x.wav")
    root = tmp_path / "root"
    _touch_wav(root / "own" / "y.wav")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "own" / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    (root / "gone.wav").symlink_to(tmp_path / "missing.wav")  # dangling: listed, reading fails
    listed = [p.relative_to(root).as_posix() for p in list_audio_files(root)]
    assert listed == ["gone.wav", "linked/x.wav", "own/y.wav"]

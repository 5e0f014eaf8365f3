"""pipeline.corpus: discovery, speaker ids, splits, checks and segment reads."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.audio import read_audio, read_segment
from cleancodec.core.corpus_index import (
    INDEX_NAME,
    IndexFileError,
    IndexRow,
    read_index,
    write_index,
)
from cleancodec.core.hashing import fingerprint
from cleancodec.pipeline.corpus import (
    DEFAULT_SPEAKER_PATTERNS,
    CorpusError,
    annotate_speakers,
    choose_val_groups,
    find_audio_files,
    listing,
    scan_audio,
    speaker_from_name,
    split_files,
)

SR = 16000


def _tone(seconds: float, sr: int = SR, channels: int = 1, f: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _write(path, data, sr=SR, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, **kw)
    return path


def test_find_audio_files_is_recursive_sorted_and_skips_non_audio(tmp_path):
    _write(tmp_path / "b" / "deep" / "x.flac", _tone(0.1))
    _write(tmp_path / "a.wav", _tone(0.1))
    _write(tmp_path / "C.WAV", _tone(0.1))
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / ".hidden.wav").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    _write(tmp_path / ".cache" / "y.wav", _tone(0.1))
    files = find_audio_files(tmp_path, "clean")
    assert [f.rel for f in files] == ["C.WAV", "a.wav", "b/deep/x.flac"]
    assert all(f.path.is_absolute() and f.size > 0 and f.role == "clean" for f in files)
    with pytest.raises(CorpusError, match="clean folder not found"):
        find_audio_files(tmp_path / "missing", "clean")


@pytest.mark.parametrize("name, speaker", [
    ("book_00012_chp_0009_reader_06709_3.wav", "06709"),     # DNS read speech
    ("clean_fileid_12.wav", None),                             # DNS synthetic: no speaker
    ("1089-134686-0000.flac", "1089"),                         # LibriSpeech
    ("p225_001.wav", "p225"),                                  # VCTK
])
def test_speaker_from_name(name, speaker):
    assert speaker_from_name(f"sub/{name}", DEFAULT_SPEAKER_PATTERNS) == speaker


def test_dns_layout_split_is_speaker_disjoint_and_deterministic(tmp_path):
    for reader in range(10):
        for chapter in range(3):
            _write(tmp_path / "read_speech" /
                   f"book_{reader:05d}_chp_{chapter:04d}_reader_{reader:05d}_0.wav", _tone(0.05))
    for i in range(4):
        _write(tmp_path / "emotional_speech" / f"clip_{i}.wav", _tone(0.05))
    files = find_audio_files(tmp_path, "clean")
    annotate_speakers(files, tmp_path)
    parts = split_files(files, val_fraction=0.2, seed=1)
    train_spk = {f.speaker for f in parts.train if f.speaker}
    val_spk = {f.speaker for f in parts.val if f.speaker}
    assert val_spk and train_spk and not (train_spk & val_spk)
    assert len(parts.train) + len(parts.val) == len(files) and not parts.held_out
    again = split_files(files, val_fraction=0.2, seed=1)
    assert [f.rel for f in again.val] == [f.rel for f in parts.val]
    groups = [f"speaker:{i}" for i in range(50)]
    assert choose_val_groups(groups, 0.2, 1) != choose_val_groups(groups, 0.2, 2)
    assert len(choose_val_groups(groups, 0.2, 1)) == 10
    assert choose_val_groups(["speaker:a"], 0.5, 0) == set()  # never the only speaker


def test_index_csv_gives_speakers_splits_and_holds_out_test(tmp_path):
    rows = [("clean/ann/ann_en_000.wav", "ann", "train"),
            ("clean/bob/bob_en_000.wav", "bob", "val"),
            ("clean/cat/cat_en_000.wav", "cat", "test")]
    for rel, _, _ in rows:
        _write(tmp_path / rel, _tone(0.05))
    _write(tmp_path / "clean" / "dan" / "dan_en_000.wav", _tone(0.05))  # not in the index
    (tmp_path / "index.csv").write_text(
        "path,role,split,kind,speaker,language\n"
        + "".join(f"{rel},clean,{split},speech,{spk},en\n" for rel, spk, split in rows))
    files = find_audio_files(tmp_path / "clean", "clean")
    annotate_speakers(files, tmp_path / "clean")
    by_rel = {f.rel: f for f in files}
    assert by_rel["ann/ann_en_000.wav"].speaker == "ann"
    assert by_rel["cat/cat_en_000.wav"].split == "test"
    parts = split_files(files, val_fraction=0.5, seed=0)
    assert [f.rel for f in parts.held_out] == ["cat/cat_en_000.wav"]
    assert "bob/bob_en_000.wav" in [f.rel for f in parts.val]
    assert "ann/ann_en_000.wav" in [f.rel for f in parts.train]
    dir_files = find_audio_files(tmp_path / "clean", "clean")
    annotate_speakers(dir_files, tmp_path / "clean", source="dir")
    assert {f.speaker for f in dir_files} == {"ann", "bob", "cat", "dan"}


def test_fingerprint_changes_with_the_files(tmp_path):
    path = _write(tmp_path / "a.wav", _tone(0.1))
    before = fingerprint(listing(find_audio_files(tmp_path, "clean")))
    assert fingerprint(listing(find_audio_files(tmp_path, "clean"))) == before
    _write(path, _tone(0.2))
    assert fingerprint(listing(find_audio_files(tmp_path, "clean"))) != before
    assert fingerprint(listing(find_audio_files(tmp_path, "noise"))) != before  # the role counts


def test_fingerprint_is_canonical_json():
    assert fingerprint({"a": 1, "b": [1, 2]}, "x") == fingerprint({"b": [1, 2], "a": 1}, "x")
    assert fingerprint(("r", "a.wav", 3, 4)) == fingerprint(["r", "a.wav", 3, 4])
    assert fingerprint(1, 2) != fingerprint(2, 1)
    assert len(fingerprint()) == 64


def test_the_index_the_demo_writes_is_the_index_the_cache_reads(tmp_path):
    """One IndexRow, one reader: rows written by the demo corpus builder come back equal, and
    give the cache stage its speakers and splits."""
    rows = [IndexRow(path="clean/ann/a.wav", role="clean", split="train", kind="speech",
                     speaker="ann", language="en", duration_s=1.25, synthetic=True,
                     source_sample_rate=8000, origin="pkg/a.g722"),
            IndexRow(path="noise/fan.wav", role="noise", split="val", kind="machine")]
    for row in rows:
        _write(tmp_path / row.path, _tone(0.05))
    write_index(tmp_path, rows)
    back = read_index(tmp_path / INDEX_NAME)
    assert sorted(back, key=lambda r: r.path) == sorted(rows, key=lambda r: r.path)
    files = find_audio_files(tmp_path / "clean", "clean")
    annotate_speakers(files, tmp_path / "clean", source="index")
    assert [(f.speaker, f.split) for f in files] == [("ann", "train")]
    noise = find_audio_files(tmp_path / "noise", "noise")
    annotate_speakers(noise, tmp_path / "noise", source="index")
    assert [(f.speaker, f.split) for f in noise] == [(None, "val")]  # empty speaker: unknown


def test_a_hand_written_index_needs_only_a_path_column(tmp_path):
    _write(tmp_path / "x" / "a.wav", _tone(0.05))
    absolute = _write(tmp_path / "elsewhere" / "b.wav", _tone(0.05))
    (tmp_path / "x" / INDEX_NAME).write_text(
        f" Path ,Speaker,notes\na.wav,s1,whatever\n{absolute},,\n")
    rows = read_index(tmp_path / "x" / INDEX_NAME)
    assert [(r.path, r.speaker, r.split, r.duration_s) for r in rows] == [
        ("a.wav", "s1", "", 0.0), (str(absolute), "", "", 0.0)]
    assert rows[1].file(tmp_path / "x" / INDEX_NAME) == absolute
    files = find_audio_files(tmp_path / "x", "clean")
    annotate_speakers(files, tmp_path / "x", source="index")
    assert [(f.rel, f.speaker, f.split) for f in files] == [("a.wav", "s1", None)]


@pytest.mark.parametrize("text, match", [
    ("speaker,split\nann,train\n", "no 'path' column"),
    ("path,duration_s\na.wav,long\n", "line 2: could not convert"),
    ("path,synthetic\na.wav,maybe\n", "line 2: synthetic must be yes or no"),
    ("path,speaker\n,ann\n", "line 2: empty path"),
])
def test_a_bad_index_is_refused_naming_the_file_and_line(tmp_path, text, match):
    (tmp_path / INDEX_NAME).write_text(text)
    with pytest.raises(IndexFileError, match=match):
        read_index(tmp_path / INDEX_NAME)
    files = find_audio_files(tmp_path, "clean")
    with pytest.raises(CorpusError, match=f"{INDEX_NAME}.*{match}"):
        annotate_speakers(files, tmp_path, source="index")


def test_scan_rejects_each_kind_of_bad_file_with_its_reason(tmp_path):
    good = _write(tmp_path / "good.wav", _tone(1.0))
    stereo_441 = _write(tmp_path / "stereo.flac", _tone(1.0, sr=44100, channels=2), sr=44100)
    blob = good.read_bytes()
    (tmp_path / "truncated.wav").write_bytes(blob[: len(blob) // 2])
    flac = _write(tmp_path / "cut_src.flac", _tone(1.0)).read_bytes()
    (tmp_path / "corrupt.flac").write_bytes(flac[: len(flac) // 2] + b"\x00" * 64)
    (tmp_path / "header_only.wav").write_bytes(blob[:30])
    (tmp_path / "text.wav").write_text("this is not audio at all")
    _write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    _write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32))
    nan = _tone(0.5)
    nan[100] = np.nan
    _write(tmp_path / "nan.wav", nan, subtype="FLOAT")
    inf = _tone(0.5)
    inf[7] = np.inf
    _write(tmp_path / "inf.wav", inf, subtype="FLOAT")
    os.symlink(tmp_path / "nowhere.wav", tmp_path / "dangling.wav")
    expect = {"truncated.wav": "truncated", "corrupt.flac": "cannot decode",
              "header_only.wav": "cannot decode", "text.wav": "cannot decode",
              "empty.wav": "empty", "silent.wav": "all-silent", "nan.wav": "NaN or inf",
              "inf.wav": "NaN or inf", "dangling.wav": "unreadable"}
    for name, reason in expect.items():
        result = scan_audio(tmp_path / name, SR)
        assert not result.ok and reason in result.reason, (name, result)
    assert scan_audio(good, SR).length == SR
    assert scan_audio(stereo_441, SR).length == SR  # 44.1 kHz stereo: resampled length


def test_read_segment_matches_whole_file_reads(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
    path16 = _write(tmp_path / "a.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(read_segment(path16, 1000, 4000, SR), x[1000:5000])
    tail = read_segment(path16, 2 * SR - 100, 400, SR)
    np.testing.assert_array_equal(tail[:100], x[-100:])
    assert np.all(tail[100:] == 0) and len(tail) == 400
    t = np.arange(3 * 48000) / 48000
    y = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 500 * t)], 1) * 0.3
    path48 = _write(tmp_path / "b.wav", y.astype(np.float32), sr=48000, subtype="FLOAT")
    whole = read_audio(path48, SR)
    seg = read_segment(path48, 12345, 8000, SR)
    np.testing.assert_allclose(seg, whole[12345:20345], atol=2e-3)
    np.testing.assert_array_equal(seg, read_segment(path48, 12345, 8000, SR))  # deterministic

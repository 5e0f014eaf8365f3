"""Demo corpus sources: the G.722 path, prompt handling and sessions, speaker splits and
the corpus profile (datagen.demo)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.audio import AudioError
from cleancodec.core.config import ConfigError, load_section
from cleancodec.core.corpus_index import IndexRow
from cleancodec.datagen.demo.config import (
    DemoDataConfig,
    SessionConfig,
    require_sources,
)
from cleancodec.datagen.demo.g722_codec import (
    G722_DELAY_SAMPLES,
    decode_g722_bytes,
    encode_g722_bytes,
    read_g722,
    read_prompt,
)
from cleancodec.datagen.demo.speech import load_prompts, plan_sessions, trim_silence
from cleancodec.datagen.demo.splits import SplitLeak, check_disjoint, hold_out
from cleancodec.pipeline.mix import rms_dbfs, window_rng
from tests.helpers import REPO, SR, padded, voiced_tone

# --- G.722 ------------------------------------------------------------------------------------


def test_g722_file_written_by_the_codec_decodes_back(tmp_path):
    x = voiced_tone(1.0)
    data = encode_g722_bytes(x)
    assert len(data) == len(x) // 2  # 64 kbit/s: one byte per two 16 kHz samples
    path = tmp_path / "hello.g722"
    path.write_bytes(data)
    y = read_g722(path)
    assert y.dtype == np.float32 and len(y) == len(x)
    d = G722_DELAY_SAMPLES
    corr = np.corrcoef(x[: len(x) - d], y[d:])[0, 1]
    assert corr > 0.99
    assert abs(rms_dbfs(y) - rms_dbfs(x)) < 0.5


def test_read_prompt_resamples_8khz_wav_and_reports_its_rate(tmp_path):
    path = tmp_path / "narrow.wav"
    sf.write(path, voiced_tone(0.5)[::2], 8000)
    audio, src_sr = read_prompt(path, SR)
    assert src_sr == 8000 and abs(len(audio) - 8000) <= 2


def test_zero_length_g722_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "is.g722"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="is.g722: empty"):
        read_g722(path)


def test_decode_bytes_is_deterministic_for_arbitrary_input():
    junk = bytes(range(256)) * 4
    a, b = decode_g722_bytes(junk), decode_g722_bytes(junk)
    assert np.array_equal(a, b) and len(a) == 2 * len(junk)


# --- prompts → sessions -----------------------------------------------------------------------


def test_trim_silence_keeps_speech_and_the_pad():
    cfg = SessionConfig(trim_pad_ms=50.0)
    speech = voiced_tone(0.8)
    trimmed = trim_silence(padded(speech, 0.5), SR, cfg)
    pad = int(0.05 * SR)
    assert abs(len(trimmed) - (len(speech) + 2 * pad)) <= int(0.02 * SR)
    assert trim_silence(np.zeros(SR, dtype=np.float32), SR, cfg).size == 0


def test_bad_prompts_are_skipped_and_listed(tmp_path):
    good = tmp_path / "good.g722"
    good.write_bytes(encode_g722_bytes(padded(voiced_tone(0.6))))
    (tmp_path / "empty.g722").write_bytes(b"")
    (tmp_path / "silent.g722").write_bytes(encode_g722_bytes(np.zeros(SR, dtype=np.float32)))
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not really audio")
    files = sorted(tmp_path.iterdir())
    prompts, skipped = load_prompts(files, tmp_path, "speech/x", SR, SessionConfig())
    assert [p.name for p in prompts] == ["good.g722"]
    reasons = {s.file: s.reason for s in skipped}
    assert set(reasons) == {"empty.g722", "silent.g722", "broken.wav"}
    assert "empty" in reasons["empty.g722"] and "silent" in reasons["silent.g722"]
    assert "cannot decode" in reasons["broken.wav"]


def test_sessions_use_every_prompt_once_and_respect_the_cap():
    cfg = SessionConfig(seconds=3.0, gap_min_seconds=0.2, gap_max_seconds=0.4)
    lengths = [int(s * SR) for s in (0.5, 1.0, 0.7, 1.2, 0.4, 0.9, 1.1, 0.6)]
    sessions = plan_sessions(lengths, SR, cfg, window_rng(1, "s", 0), None)
    flat = [i for s in sessions for i in s]
    assert sorted(flat) == list(range(len(lengths)))
    mean_gap = 0.3 * SR
    for s in sessions:
        assert len(s) == 1 or sum(lengths[i] for i in s) + mean_gap * (len(s) - 1) <= 3.0 * SR
    again = plan_sessions(lengths, SR, cfg, window_rng(1, "s", 0), None)
    assert again == sessions
    capped = plan_sessions(lengths, SR, cfg, window_rng(1, "s", 0), int(2.0 * SR))
    used = [lengths[i] for s in capped for i in s]
    assert sum(used) >= 2.0 * SR and sum(used[:-1]) < 2.0 * SR


# --- splits -----------------------------------------------------------------------------------


def test_hold_out_is_seeded_order_free_and_keeps_train():
    names = [f"n{i}" for i in range(10)]
    a = hold_out(names, 7, "k", 0.2, 0.1)
    assert a == hold_out(list(reversed(names)), 7, "k", 0.2, 0.1)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 1, "test": 2}
    assert a != hold_out(names, 8, "k", 0.2, 0.1)
    assert set(hold_out(["only"], 7, "k", 0.5, 0.5).values()) == {"train"}
    two = hold_out(["a", "b"], 7, "k", 0.2, 0.1)
    assert sorted(two.values()) == ["test", "train"]


def _row(path, role, split, speaker="", kind="speech", origin="", pkg="p"):
    return IndexRow(path=path, role=role, split=split, kind=kind, speaker=speaker,
                    source_package=pkg, origin=origin)


def test_check_disjoint_catches_speaker_and_noise_leaks():
    ok = [_row("a", "clean", "train", "s1"), _row("b", "clean", "test", "s2"),
          _row("c", "noise", "train", kind="music", origin="t1.g722"),
          _row("d", "noise", "test", kind="music", origin="t2.g722"),
          _row("e", "testset-clean", "test", "s2")]
    check_disjoint(ok)
    with pytest.raises(SplitLeak, match="speaker 's1'"):
        check_disjoint(ok + [_row("f", "testset-clean", "test", "s1")])
    with pytest.raises(SplitLeak, match="t1.g722"):
        check_disjoint(ok + [_row("g", "noise", "val", kind="music", origin="t1.g722")])


def _cfg(synthetic: tuple[str, ...] = (), speakers: dict | None = None,
         **splits) -> DemoDataConfig:
    speech = [dict(package=f"p-{s}", speaker=s, language="en", license="CC0-1.0", files="*",
                   synthetic=s in synthetic)
              for ss in splits.values() for s in ss]
    return DemoDataConfig(speech=speech, splits={"speakers": speakers or splits})


def test_config_validation_rejects_broken_splits():
    _cfg(train=["a"], test=["b"])
    with pytest.raises(ConfigError, match="both"):
        _cfg(train=["a"], test=["a"])
    with pytest.raises(ConfigError, match="'test' split needs"):
        _cfg(train=["a"], val=["b"])
    with pytest.raises(ConfigError, match="real"):
        _cfg(synthetic=("b",), train=["a"], test=["b"])
    with pytest.raises(ConfigError, match=r"\['b'\] no split"):
        _cfg(speakers={"train": ["a"]}, train=["a"], test=["b"])
    with pytest.raises(ConfigError, match=r"demo_data\.splits\.speakers has unknown split"):
        load_section(None, "demo_data", DemoDataConfig, ["demo_data.splits.speakers={dev: [a]}"])
    with pytest.raises(ConfigError, match=r"demo_data\.generated\.kinds.*'hiss'"):
        load_section(None, "demo_data", DemoDataConfig, ["demo_data.generated.kinds=[hiss]"])
    # an empty definition is a valid config (it prints); building refuses it
    with pytest.raises(ConfigError, match=r"demo_data\.speech holds no speech sources"):
        require_sources(DemoDataConfig())


def test_shipped_profile_loads_and_holds_out_a_real_speaker():
    cfg = load_section(REPO / "conf/demo_data.yaml", "demo_data", DemoDataConfig)
    require_sources(cfg)
    test_speakers = set(cfg.splits.speakers["test"])
    real = {s.speaker for s in cfg.enabled_speech if not s.synthetic}
    assert test_speakers & real
    en_es = {s.speaker for s in cfg.enabled_speech if s.package.endswith(("en-g722", "es-g722"))}
    assert en_es == {"allison"}  # one voice in two languages is one speaker

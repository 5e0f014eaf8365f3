"""Demo corpus builder: G.722 path, prompt handling, splits, generated noise, test-set naming,
and a whole offline build from tiny .deb packages made here with dpkg-deb (no apt needed).

The slow test at the end builds the real corpus from Debian's packages through apt.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.audio import AudioError
from cleancodec.core.config import ConfigError, load_section
from cleancodec.core.corpus_index import INDEX_NAME, IndexRow, read_index
from cleancodec.core.dns import noisy_name, pair_by_fileid, parse_noisy_name
from cleancodec.datagen.demo import debs
from cleancodec.datagen.demo.build import build_demo_data, sweep_leftovers
from cleancodec.datagen.demo.config import (
    DemoDataConfig,
    GeneratedNoiseConfig,
    RealNoiseConfig,
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
from cleancodec.datagen.demo.index import split_paths
from cleancodec.datagen.demo.noise_real import copyright_licenses, event_sequence, kind_of, segment
from cleancodec.datagen.demo.speech import load_prompts, plan_sessions, trim_silence
from cleancodec.datagen.demo.splits import SplitLeak, check_disjoint, hold_out
from cleancodec.datagen.synth import BabbleSource, generate
from cleancodec.pipeline.mix import rms_dbfs, snr_db, window_rng

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def speechlike(seconds: float, f0: float = 140.0, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Harmonic tone with a 4 Hz syllable envelope: float32 ``[T]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 12))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))
    x = tone * env
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR)


def padded(x: np.ndarray, pad_s: float = 0.3) -> np.ndarray:
    pad = np.zeros(int(pad_s * SR), dtype=np.float32)
    return np.concatenate([pad, x, pad])


# --- G.722 ------------------------------------------------------------------------------------


def test_g722_file_written_by_the_codec_decodes_back(tmp_path):
    x = speechlike(1.0)
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
    sf.write(path, speechlike(0.5)[::2], 8000)
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
    speech = speechlike(0.8)
    trimmed = trim_silence(padded(speech, 0.5), SR, cfg)
    pad = int(0.05 * SR)
    assert abs(len(trimmed) - (len(speech) + 2 * pad)) <= int(0.02 * SR)
    assert trim_silence(np.zeros(SR, dtype=np.float32), SR, cfg).size == 0


def test_bad_prompts_are_skipped_and_listed(tmp_path):
    good = tmp_path / "good.g722"
    good.write_bytes(encode_g722_bytes(padded(speechlike(0.6))))
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


# --- noise ------------------------------------------------------------------------------------


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2016 Someone
License: MIT

Files: etc/samples/ambi_drone.flac
Copyright: 2013 A
License: CC0

Files:
 etc/samples/loop_a.flac
 etc/samples/loop_b.flac
License: CC-BY-4.0
"""


def test_copyright_file_gives_per_file_licenses():
    lic = copyright_licenses(DEP5)
    assert lic == {"ambi_drone.flac": "CC0", "loop_a.flac": "CC-BY-4.0",
                   "loop_b.flac": "CC-BY-4.0"}


def test_kind_is_the_first_matching_pattern():
    kinds = {"machine": ["loop_industrial"], "musicloop": ["loop_*"], "ambience": ["ambi_*"]}
    assert kind_of("loop_industrial", kinds) == "machine"
    assert kind_of("loop_amen", kinds) == "musicloop"
    assert kind_of("bd_808", kinds) is None


def test_segments_cover_the_recording():
    x = np.arange(1000, dtype=np.float32)
    parts = segment(x, 300)
    assert len(parts) == 4 and all(len(p) <= 300 for p in parts)
    assert np.array_equal(np.concatenate(parts), x)


def test_event_sequences_have_no_long_gaps():
    cfg = RealNoiseConfig(event_rate_min_hz=1.0, event_rate_max_hz=1.0)
    hit = np.hanning(400).astype(np.float32)
    out, used = event_sequence([hit, -hit], 10 * SR, SR, cfg, window_rng(0, "ev", 0))
    onsets = np.flatnonzero(np.diff((np.abs(out) > 1e-4).astype(int)) == 1)
    assert len(used) >= 6 and np.max(np.diff(onsets)) <= 1.5 * SR + 400
    assert np.max(np.abs(out)) <= 0.99


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum", "crackle", "nonstationary"])
def test_generated_noise_is_seeded_and_at_the_level(kind):
    cfg = GeneratedNoiseConfig(level_dbfs=-25.0)
    a, _ = generate(kind, window_rng(3, kind, 0), 2 * SR, SR, cfg)
    b, _ = generate(kind, window_rng(3, kind, 0), 2 * SR, SR, cfg)
    c, _ = generate(kind, window_rng(3, kind, 1), 2 * SR, SR, cfg)
    assert a.dtype == np.float32 and len(a) == 2 * SR
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.max(np.abs(a)) <= 0.99
    assert rms_dbfs(a) == pytest.approx(-25.0, abs=0.5) or np.max(np.abs(a)) > 0.98


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(np.mean(spec[(f >= lo) & (f < hi)]))


def test_pink_and_brown_fall_off_with_frequency():
    cfg = GeneratedNoiseConfig()
    slopes = {}
    for kind in ("white", "pink", "brown"):
        x, _ = generate(kind, window_rng(0, kind, 0), 4 * SR, SR, cfg)
        # four octaves: 250-500 Hz vs 4-8 kHz
        slopes[kind] = (_band_db(x, 4000, 8000) - _band_db(x, 250, 500)) / 4
    assert abs(slopes["white"]) < 1.0
    assert -4.5 < slopes["pink"] < -1.5
    assert -7.5 < slopes["brown"] < -4.5


def test_hum_sits_on_the_mains_frequency():
    cfg = GeneratedNoiseConfig(hum_mains_hz=[60.0])
    x, _ = generate("hum", window_rng(0, "hum", 0), 2 * SR, SR, cfg)
    spec = np.abs(np.fft.rfft(x))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    assert abs(f[np.argmax(spec)] - 60.0) < 1.0 or abs(f[np.argmax(spec)] - 180.0) < 2.0


def test_babble_mixes_several_talkers_from_the_given_files(tmp_path):
    sources = []
    for i, f0 in enumerate((110.0, 180.0, 230.0)):
        path = tmp_path / f"spk{i}.wav"
        sf.write(path, speechlike(4.0, f0=f0, seed=i), SR)
        sources.append(BabbleSource(path, 4 * SR))
    cfg = GeneratedNoiseConfig(babble_min_talkers=4, babble_max_talkers=4)
    x, used = generate("babble", window_rng(0, "b", 0), 3 * SR, SR, cfg, sources)
    y, _ = generate("babble", window_rng(0, "b", 0), 3 * SR, SR, cfg, sources)
    assert np.array_equal(x, y) and used <= {str(s.path) for s in sources} and len(used) >= 2
    with pytest.raises(ValueError, match="training speakers"):
        generate("babble", window_rng(0, "b", 0), SR, SR, cfg, [])


# --- DNS-style test-set names -----------------------------------------------------------------


def test_noisy_names_parse_like_the_dns_test_set(tmp_path):
    name = noisy_name(12, "music_cold-day-001", 5, -30)
    assert name == "clnsp12_music_cold-day-001_snr5_tl-30_fileid_12.wav"
    info = parse_noisy_name(name)
    assert (info.fileid, info.snr_db, info.level_dbfs) == (12, 5, -30)
    real = parse_noisy_name("clnsp102_traffic_248091_3_snr0_tl-21_fileid_268.wav")
    assert (real.fileid, real.snr_db, real.level_dbfs) == (268, 0, -21)
    for bad in ("a_snr5", "x_tl-3", "fileid_2", "sp ace"):
        with pytest.raises(ValueError):
            noisy_name(1, bad, 5, -30)
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    for k in (1, 2, 10):
        (tmp_path / "clean" / f"clean_fileid_{k}.wav").touch()
    for k in (2, 10, 11):
        (tmp_path / "noisy" / noisy_name(k, "white_w", 3, -25)).touch()
    pairs = pair_by_fileid(tmp_path / "clean", tmp_path / "noisy")
    assert [(c.name, parse_noisy_name(n.name).fileid) for c, n in pairs] == [
        ("clean_fileid_2.wav", 2), ("clean_fileid_10.wav", 10)]


# --- a whole build from tiny local packages ---------------------------------------------------


def _make_deb(cache: Path, package: str, files: dict[str, bytes], copyright_text: str) -> None:
    assert shutil.which("dpkg-deb"), "dpkg-deb is needed to build test packages (Debian's dpkg)"
    tree = cache.parent / f"tree-{package}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
        f"Maintainer: Test <test@example.org>\nDescription: test package\n")
    files = {**files, f"usr/share/doc/{package}/copyright": copyright_text.encode()}
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(tree),
                    str(cache / f"{package}_1.0-1_all.deb")], check=True, capture_output=True)


def _voice_files(voice: str, f0: float, n: int, extra: dict[str, bytes] | None = None):
    files = {}
    for i in range(n):
        audio = padded(speechlike(0.8 + 0.15 * (i % 4), f0=f0, seed=i), 0.2)
        files[f"usr/share/sounds/{voice}/p{i:02d}.g722"] = encode_g722_bytes(audio)
    files.update(extra or {})
    return files


def _flac(x: np.ndarray, sr: int, tmp: Path) -> bytes:
    path = tmp / "x.flac"
    sf.write(path, x, sr)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("debs")
    cache = root / "cache"
    _make_deb(cache, "voice-a", _voice_files("a", 120.0, 10, {
        "usr/share/sounds/a/empty.g722": b""}), "License: CC-BY-SA-3.0\n")
    _make_deb(cache, "voice-a2", _voice_files("a2", 125.0, 6), "License: CC-BY-SA-3.0\n")
    _make_deb(cache, "voice-b", _voice_files("b", 200.0, 8, {
        "usr/share/sounds/b/broken.wav": b"RIFF....WAVEjunk"}), "License: CC-BY-3.0\n")
    _make_deb(cache, "voice-c", _voice_files("c", 230.0, 24), "License: CC-BY-3.0\n")
    rng = np.random.default_rng(0)
    noise_files = {
        f"usr/share/samples/ambi_{i}.flac":
            _flac((0.1 * rng.standard_normal((int(2.5 * SR), 2))).astype(np.float32), 44100, root)
        for i in range(3)}
    for i in range(3):
        hit = (np.hanning(800) * rng.standard_normal(800)).astype(np.float32)
        noise_files[f"usr/share/samples/hit_{i}.flac"] = _flac(hit, 44100, root)
    noise_files["usr/share/samples/readme_like.flac"] = b"not audio"
    dep5 = ("Files: *\nLicense: MIT\n\nFiles: usr/share/samples/ambi_0.flac\nLicense: CC0\n")
    _make_deb(cache, "noise-pack", noise_files, dep5)
    return cache


def _tiny_cfg(tmp_path: Path) -> Path:
    conf = tmp_path / "tiny_demo.yaml"
    conf.write_text("""
demo_data:
  seed: 5
  apt_update: never
  speech:
    - {package: voice-a, speaker: a, language: en-US, license: CC-BY-SA-3.0,
       files: "usr/share/sounds/a/*.g722"}
    - {package: voice-a2, speaker: a, language: es-MX, license: CC-BY-SA-3.0,
       files: "usr/share/sounds/a2/*.g722"}
    - {package: voice-b, speaker: b, language: it-IT, license: CC-BY-3.0,
       files: "usr/share/sounds/b/*"}
    - {package: voice-c, speaker: c, language: fr-CA, license: CC-BY-3.0,
       files: "usr/share/sounds/c/*.g722"}
  splits:
    speakers: {train: [a], val: [b], test: [c]}
  noise_packages:
    - package: noise-pack
      license: CC0-1.0
      files: "usr/share/samples/*.flac"
      kinds: {ambience: ["ambi_*"], hits: ["hit_*", "readme*"]}
  sessions: {seconds: 4.0}
  real_noise: {segment_seconds: 1.0, min_file_seconds: 0.5, event_sequence_seconds: 2.0,
               event_sequences: {train: 1, val: 1, test: 1}}
  generated:
    kinds: [white, hum, babble, nonstationary]
    seconds: 1.5
    files: {train: 2, val: 1, test: 1}
  testset: {clips: 4, seconds: 2.0, min_active_fraction: 0.5}
""")
    return conf


def _index(root: Path) -> list[dict]:
    with open(root / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_offline_build_from_local_packages(tiny_packages, tmp_path):
    cfg = load_section(_tiny_cfg(tmp_path), "demo_data", DemoDataConfig)
    out = tmp_path / "demo"
    report = build_demo_data(cfg, out, tiny_packages)
    assert report.ok, report.failures
    rows = read_index(out / INDEX_NAME)
    # every listed file exists, is 16 kHz mono and as long as the index says
    for r in rows:
        info = sf.info(out / r.path)
        assert info.samplerate == SR and info.channels == 1
        assert info.frames / SR == pytest.approx(r.duration_s, abs=2e-3)
    speakers = {(r.speaker, r.split) for r in rows if r.role == "clean"}
    assert speakers == {("a", "train"), ("b", "val"), ("c", "test")}
    langs = {r.language for r in rows if r.speaker == "a" and r.role == "clean"}
    assert langs == {"en-US", "es-MX"}
    # bad inputs were skipped and listed, not fatal
    skipped = {(s.unit, s.file) for s in report.skipped}
    assert ("speech/voice-a", "empty.g722") in skipped
    assert ("speech/voice-b", "broken.wav") in skipped
    assert ("noise/noise-pack", "readme_like.flac") in skipped
    with open(out / "skipped.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(report.skipped)
    # noise: held out per recording, per-file license from the copyright file, all splits fed
    noise = [r for r in rows if r.role == "noise"]
    assert {r.split for r in noise if r.kind == "ambience"} == {"train", "val", "test"}
    lic = {r.origin: r.license for r in noise if r.kind == "ambience"}
    assert lic.get("ambi_0.flac", "CC0") == "CC0" and set(lic.values()) <= {"CC0", "CC0-1.0"}
    assert {r.kind for r in noise} >= {"ambience", "hits", "white", "hum", "babble",
                                        "nonstationary"}
    babble = [r for r in noise if r.kind == "babble"]
    assert all(o.startswith("clean/a/") for r in babble for o in r.origin.split())
    check_disjoint(rows)
    assert (out / "licenses/voice-a.copyright").read_text().startswith("License")
    # the test set: test speaker only, test noise only, names carry SNR and level exactly
    pairs = pair_by_fileid(out / "testset/clean", out / "testset/noisy")
    assert len(pairs) == 4
    test_noise = {Path(r.path).stem.replace("_", "-") for r in noise if r.split == "test"}
    for clean_path, noisy_path in pairs:
        info = parse_noisy_name(noisy_path.name)
        assert 0 <= info.snr_db <= 20 and -35 <= info.level_dbfs <= -15
        clean, _ = sf.read(clean_path, dtype="float32")
        noisy, _ = sf.read(noisy_path, dtype="float32")
        assert len(clean) == len(noisy) == 2 * SR
        assert snr_db(clean, noisy - clean) == pytest.approx(info.snr_db, abs=0.3)
        assert rms_dbfs(noisy) == pytest.approx(info.level_dbfs, abs=0.6)
        assert noisy_path.name.split("_")[2] in test_noise
    ts = [r for r in rows if r.role.startswith("testset")]
    assert {r.speaker for r in ts} == {"c"} and len(ts) == 8
    assert split_paths(out, "train", "clean") == sorted(
        out / r.path for r in rows if r.role == "clean" and r.split == "train")
    splits = (out / "splits.json").read_text()
    assert '"test"' in splits and '"c"' in splits


def test_rebuild_reuses_everything_and_config_changes_rebuild_only_what_changed(
        tiny_packages, tmp_path):
    conf = _tiny_cfg(tmp_path)
    out = tmp_path / "demo"
    first = build_demo_data(load_section(conf, "demo_data", DemoDataConfig), out, tiny_packages)
    snapshot = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    again = build_demo_data(load_section(conf, "demo_data", DemoDataConfig), out, tiny_packages)
    assert again.built == [] and len(again.reused) == len(first.built)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == snapshot
    assert sorted(map(dataclasses.astuple, again.rows)) == sorted(
        map(dataclasses.astuple, first.rows))
    # fewer generated files: only that kind (and the test set, which draws from noise) redone,
    # and the files no longer produced are removed
    cfg = load_section(conf, "demo_data", DemoDataConfig)
    cfg.generated.files = {"train": 1, "val": 1, "test": 1}
    third = build_demo_data(cfg, out, tiny_packages)
    assert not any(u.startswith("speech/") for u in third.built)
    assert "generated/white" in third.built and third.removed_stale >= 4
    assert not (out / "noise/white/white-train_001.wav").exists()
    listed = {(out / r.path).resolve() for r in third.rows}
    assert {p.resolve() for p in out.rglob("*.wav")} == listed
    # an interrupted build leaves no half files: a deleted output makes its unit rebuild
    victim = next(out.glob("clean/c/*.wav"))
    victim.unlink()
    fourth = build_demo_data(cfg, out, tiny_packages)
    assert "speech/voice-c" in fourth.built and victim.exists()
    assert not list(out.rglob("*.tmp"))


def test_missing_package_is_reported_with_a_remedy_and_the_rest_is_built(
        tiny_packages, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_packages, cache)
    next(cache.glob("voice-b_*.deb")).unlink()
    real_which = shutil.which
    monkeypatch.setattr(debs.shutil, "which",
                        lambda name: None if name == "apt-get" else real_which(name))
    cfg = load_section(_tiny_cfg(tmp_path), "demo_data", DemoDataConfig)
    out = tmp_path / "demo"
    report = build_demo_data(cfg, out, cache)
    assert not report.ok
    failure = "\n".join(report.failures)
    assert "voice-b: apt-get is not available" in failure and "copy voice-b_*.deb" in failure
    assert "speech/voice-c" in report.built and "testset" in report.built
    assert not (out / "clean/b").exists()
    assert not list(out.rglob(".download-*")) and not list(cache.glob(".download-*"))
    assert not list(out.glob(".unpack-*"))


FAKE_APT = """#!/bin/sh
# stand-in for apt-get: logs its calls; "download" fails as with stale package lists until
# "update" has run, or always with a network error when $FAKE_APT_MODE is "offline"
echo "$*" >> "$FAKE_APT_LOG"
if [ "$1" = "update" ]; then touch "$FAKE_APT_STATE/updated"; exit 0; fi
pkg="$3"
if [ "$FAKE_APT_MODE" = "offline" ]; then
  echo "E: Failed to fetch http://deb.debian.org/x  Temporary failure resolving" >&2; exit 100
fi
if [ -f "$FAKE_APT_STATE/updated" ]; then echo deb > "${pkg}_1.0_all.deb"; exit 0; fi
echo "E: Unable to locate package $pkg" >&2; exit 100
"""


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text(FAKE_APT)
    script.chmod(0o755)
    log = tmp_path / "apt.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_LOG", str(log))
    monkeypatch.setenv("FAKE_APT_STATE", str(tmp_path))
    return lambda: log.read_text().splitlines() if log.exists() else []


def test_stale_package_lists_are_updated_once_when_root(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debs, "is_root", lambda: True)
    fetcher = debs.AptFetcher(tmp_path / "cache", "auto")
    deb = fetcher.fetch("voice-q")
    assert deb == tmp_path / "cache" / "voice-q_1.0_all.deb" and deb.is_file()
    assert fake_apt() == ["download -q voice-q", "update -q", "download -q voice-q"]
    assert fetcher.fetch("voice-q") == deb and len(fake_apt()) == 3  # cached: apt not called
    assert not list((tmp_path / "cache").glob(".download-*"))


def test_stale_package_lists_say_what_to_run_when_not_root(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debs, "is_root", lambda: False)
    with pytest.raises(debs.PackageError,
                       match=r"voice-q: apt cannot find[\s\S]*sudo apt-get update"):
        debs.AptFetcher(tmp_path / "cache", "auto").fetch("voice-q")
    assert fake_apt() == ["download -q voice-q"]


def test_network_failure_names_the_package_and_leaves_nothing(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debs, "is_root", lambda: True)
    monkeypatch.setenv("FAKE_APT_MODE", "offline")
    with pytest.raises(debs.PackageError, match="voice-q: apt-get download failed.*resolving"):
        debs.AptFetcher(tmp_path / "cache", "auto").fetch("voice-q")
    assert fake_apt() == ["download -q voice-q"]  # not a stale list: no update attempted
    assert list((tmp_path / "cache").iterdir()) == []


def test_corrupt_cached_deb_fails_its_part_only_and_leaves_no_unpacked_files(
        tiny_packages, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_packages, cache)
    next(cache.glob("voice-c_*.deb")).write_bytes(b"!<arch>\ntruncated download")
    cfg = load_section(_tiny_cfg(tmp_path), "demo_data", DemoDataConfig)
    report = build_demo_data(cfg, tmp_path / "demo", cache)
    failure = "\n".join(report.failures)
    assert "voice-c: voice-c_1.0-1_all.deb is not a readable .deb" in failure
    assert "testset: not built because" in failure  # needs the test speaker
    assert "speech/voice-a" in report.built and not list(cache.glob("voice-c_*"))
    assert not list((tmp_path / "demo").glob(".unpack-*"))


def test_leftovers_of_a_killed_build_are_swept_when_old(tmp_path):
    root, cache = tmp_path / "demo", tmp_path / "cache"
    old_dirs = [root / ".unpack-abc", cache / ".download-x"]
    old_file = root / "clean/a/.a_000.wav.x.tmp"
    for d in old_dirs:
        d.mkdir(parents=True)
    old_file.parent.mkdir(parents=True)
    old_file.write_bytes(b"half")
    young = root / ".unpack-now"
    young.mkdir()
    keep = root / "clean/a/a_000.wav"
    keep.write_bytes(b"done")
    old = [*old_dirs, old_file]
    for p in [*old, keep]:
        os.utime(p, (1, 1))
    assert sweep_leftovers(root, cache) == 3
    assert not any(p.exists() for p in old) and young.exists() and keep.exists()


def test_corrupt_cached_deb_is_removed_and_named(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / "voice-z_1.0_all.deb"
    bad.write_bytes(b"!<arch>\nnot a deb")
    with pytest.raises(debs.PackageError, match="voice-z: voice-z_1.0_all.deb is not a readable"):
        debs.unpack_deb(bad, tmp_path / "x", "voice-z")
    assert not bad.exists()


def test_cli_builds_and_prints_the_summary(tiny_packages, tmp_path):
    from click.testing import CliRunner

    from cleancodec.cli import main

    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo-data", "--conf", str(_tiny_cfg(tmp_path)),
                                       "--out", str(out), "--deb-cache", str(tiny_packages)])
    assert result.exit_code == 0, result.output
    assert "speaker" in result.output and "noise kind" in result.output
    assert "test set: 4 clips" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("demo_data:\n  speech: []\n")
    result = CliRunner().invoke(main, ["demo-data", "--conf", str(bad), "--out", str(out)])
    assert result.exit_code != 0 and "no speech sources" in result.output


# --- the real corpus --------------------------------------------------------------------------


@pytest.mark.slow
def test_real_demo_corpus_from_debian_packages(tmp_path):
    """Builds the shipped corpus definition through apt (reusing data/demo/.debs when there).

    Fails, with the package and what to do, when the Debian sources cannot be reached.
    """
    cfg = load_section(REPO / "conf/demo_data.yaml", "demo_data", DemoDataConfig)
    cache = REPO / "data/demo/.debs"
    out = tmp_path / "demo"
    report = build_demo_data(cfg, out, cache)
    assert report.ok, "demo corpus build failed:\n" + "\n".join(report.failures)
    rows = read_index(out / INDEX_NAME)
    check_disjoint(rows)
    split_of = {}
    for r in rows:
        if r.role == "clean":
            assert split_of.setdefault(r.speaker, r.split) == r.split
    assert set(split_of.values()) == {"train", "val", "test"}
    assert not set(cfg.splits.speakers["test"]) & {s for s, sp in split_of.items() if sp != "test"}
    minutes = {s: sum(r.duration_s for r in rows if r.role == "clean" and r.split == s) / 60
               for s in ("train", "val", "test")}
    assert minutes["train"] > 40 and minutes["val"] > 5 and minutes["test"] > 10, minutes
    for r in rows[:: max(1, len(rows) // 60)]:  # spot-check files against the index
        info = sf.info(out / r.path)
        assert info.samplerate == SR and info.channels == 1
        assert info.frames / SR == pytest.approx(r.duration_s, abs=2e-3)
    pairs = pair_by_fileid(out / "testset/clean", out / "testset/noisy")
    assert len(pairs) == cfg.testset.clips
    for c, n in pairs:
        clean, _ = sf.read(c, dtype="float32")
        noisy, _ = sf.read(n, dtype="float32")
        info = parse_noisy_name(n.name)
        assert len(clean) == len(noisy) == int(cfg.testset.seconds * SR)
        assert 0 <= info.snr_db <= 20
        assert snr_db(clean, noisy - clean) == pytest.approx(info.snr_db, abs=0.3)
        assert rms_dbfs(noisy) == pytest.approx(info.level_dbfs, abs=0.6)
    kinds = {r.kind for r in rows if r.role == "noise"}
    assert {"music", "vinyl", "babble", "hum", "pink", "white", "brown", "crackle",
            "nonstationary"} <= kinds
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 250 * 2**20, f"corpus is {size / 2**20:.0f} MiB"
    again = build_demo_data(cfg, out, cache)
    assert again.built == [] and again.ok


# --- make demo's steps ------------------------------------------------------------------------


def test_demo_preflight_explains_missing_weights(tmp_path):
    from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, CodecWeightsError
    from cleancodec.datagen.demo.preflight import (
        EXIT_NO_WEIGHTS,
        missing_weights_message,
        preflight,
        run_preflight,
    )

    assert preflight(CodecConfig(weights="random")) == RANDOM_INIT_BANNER
    assert run_preflight(None, "random") == (0, RANDOM_INIT_BANNER)
    with pytest.raises(CodecWeightsError, match="no such weights file") as err:
        preflight(CodecConfig(weights=str(tmp_path / "missing.pth")))
    message = missing_weights_message(err.value)
    assert "make demo CODEC=random" in message and "CODEC=/path/to/" in message
    status, text = run_preflight(None, str(tmp_path / "missing.pth"))
    assert status == EXIT_NO_WEIGHTS and "missing.pth" in text and "make demo CODEC=random" in text


def test_demo_testset_excerpt_copies_pairs_by_fileid(tmp_path):
    from cleancodec.datagen.demo.excerpt import copy_testset

    root = tmp_path / "corpus" / "testset"
    for k in range(3):
        write_wav(root / "clean" / f"clean_fileid_{k}.wav", np.full(SR // 10, 0.1, np.float32))
        write_wav(root / "noisy" / f"synth_snr5_tl-25_fileid_{k}.wav",
                  np.full(SR // 10, 0.2, np.float32))
    (root / "clean" / "clean_fileid_7.wav").write_bytes(b"")  # no noisy partner
    names = copy_testset(tmp_path / "corpus", tmp_path / "out", clips=1)
    assert names == ["synth_snr5_tl-25_fileid_0.wav"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.wav")) == \
        ["clean_fileid_0.wav", "synth_snr5_tl-25_fileid_0.wav"]
    assert len(copy_testset(tmp_path / "corpus", tmp_path / "all", clips=0)) == 3
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    for kind in ("clean", "noisy"):
        (tmp_path / "empty" / "testset" / kind).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no clean/noisy pairs"):
        copy_testset(tmp_path / "empty", tmp_path / "x", clips=1)

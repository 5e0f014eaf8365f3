"""Demo corpus noise: per-file licences and kinds of real recordings, event sequences,
generated noise (levels, spectra, mains hum, babble), and DNS-style test-set names."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.dns import noisy_name, pair_by_fileid, parse_noisy_name
from cleancodec.datagen.demo.config import (
    GeneratedNoiseConfig,
    RealNoiseConfig,
)
from cleancodec.datagen.demo.noise_real import copyright_licenses, event_sequence, kind_of, segment
from cleancodec.datagen.noise_synth import BabbleSource, generate
from cleancodec.pipeline.mix import rms_dbfs, window_rng
from tests.helpers import SR, voiced_tone

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
        sf.write(path, voiced_tone(4.0, f0=f0, seed=i), SR)
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

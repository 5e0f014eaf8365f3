"""datagen.synth and datagen.noise_synth: the seeded, self-generated tiny corpus."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cleancodec.datagen.synth import (
    NOISE_KINDS,
    make_tiny_corpus,
    speaker_voice,
    synth_noise,
    synth_utterance,
)
from cleancodec.pipeline.corpus import DEFAULT_SPEAKER_PATTERNS, find_audio_files, speaker_from_name
from cleancodec.pipeline.mix import MixConfig, active_fraction

SR = 16000
SMALL = dict(speakers=2, clips_per_speaker=2, clip_seconds=1.5, noises_per_kind=1,
             noise_seconds=1.0)


def _f0_autocorr(x: np.ndarray, lo: float = 70.0, hi: float = 400.0) -> float:
    """Pitch of the most energetic 60 ms frame by autocorrelation."""
    frame = int(0.06 * SR)
    starts = range(0, len(x) - frame, frame // 2)
    best = max(starts, key=lambda s: float(np.sum(x[s:s + frame] ** 2)))
    seg = x[best:best + frame] - np.mean(x[best:best + frame])
    ac = np.correlate(seg, seg, mode="full")[frame - 1:]
    lags = np.arange(int(SR / hi), int(SR / lo))
    return SR / lags[np.argmax(ac[lags])]


def test_layout_names_carry_speaker_ids(tmp_path):
    corpus = make_tiny_corpus(tmp_path, seed=1, **SMALL)
    clean = find_audio_files(corpus.clean_dir, "clean")
    noise = find_audio_files(corpus.noise_dir, "noise")
    assert len(clean) == 4 and len(noise) == len(NOISE_KINDS)
    assert sorted(f.path for f in clean) == sorted(p.absolute() for p in corpus.clean_files)
    speakers = {speaker_from_name(f.rel, DEFAULT_SPEAKER_PATTERNS) for f in clean}
    assert speakers == {"0000", "0001"}
    assert {f.rel.split("/")[0] for f in noise} == set(NOISE_KINDS)
    for f in clean:
        info = sf.info(str(f.path))
        assert info.samplerate == SR and info.frames == int(1.5 * SR) and info.channels == 1


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    a = make_tiny_corpus(tmp_path / "a", seed=7, **SMALL)
    b = make_tiny_corpus(tmp_path / "b", seed=7, **SMALL)
    c = make_tiny_corpus(tmp_path / "c", seed=8, **SMALL)
    for fa, fb, fc in zip(a.clean_files + a.noise_files, b.clean_files + b.noise_files,
                          c.clean_files + c.noise_files):
        assert fa.read_bytes() == fb.read_bytes()
        assert fa.read_bytes() != fc.read_bytes()


def test_existing_corpus_is_reused_and_regenerated_on_change(tmp_path):
    first = make_tiny_corpus(tmp_path, seed=0, **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in first.clean_files}
    again = make_tiny_corpus(tmp_path, seed=0, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in again.clean_files} == stamp
    changed = make_tiny_corpus(tmp_path, seed=0, **{**SMALL, "speakers": 3})
    assert len(changed.clean_files) == 6 and all(p.is_file() for p in changed.clean_files)
    first.clean_files[0].unlink()  # a missing file also triggers regeneration
    repaired = make_tiny_corpus(tmp_path, seed=0, **{**SMALL, "speakers": 3})
    assert all(p.is_file() for p in repaired.clean_files)


def test_utterances_are_voiced_with_pauses_and_speaker_pitch():
    for speaker in range(4):
        voice = speaker_voice(0, speaker)
        x = synth_utterance(0, speaker, 0, 3.0)
        assert x.dtype == np.float32 and len(x) == 3 * SR
        assert np.max(np.abs(x)) <= 0.9 + 1e-6
        frac = active_fraction(x, SR, MixConfig())
        assert 0.3 < frac < 0.97, frac  # speech with pauses, not a continuous tone
        f0 = _f0_autocorr(x)
        assert 0.6 * voice.f0_hz < f0 < 1.5 * voice.f0_hz, (speaker, f0, voice.f0_hz)
    low, high = speaker_voice(0, 0), speaker_voice(0, 1)
    assert high.f0_hz > 1.25 * low.f0_hz


def test_noise_kinds_have_their_character():
    n = 2 * SR
    spectra = {}
    for kind in NOISE_KINDS:
        x = synth_noise(kind, 0, 0, 2.0)
        assert len(x) == n and np.isfinite(x).all()
        assert 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) == pytest.approx(
            -25.0, abs=0.5)
        spectra[kind] = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(n, 1 / SR)
    band = lambda s, a, b: float(np.mean(s[(f >= a) & (f < b)]))  # noqa: E731
    white, pink = spectra["white"], spectra["pink"]
    assert 0.5 < band(white, 100, 500) / band(white, 4000, 8000) < 2.0
    assert band(pink, 100, 500) / band(pink, 4000, 8000) > 8.0
    hum = spectra["hum"]
    mains_share = sum(float(np.sum(hum[(np.abs(f - h * m) < 3)])) for m in (50.0, 60.0)
                      for h in range(1, 8)) / float(np.sum(hum))
    assert mains_share > 0.9
    clicks = synth_noise("clicks", 0, 0, 2.0).astype(np.float64)
    kurtosis = np.mean(clicks**4) / np.mean(clicks**2) ** 2
    assert kurtosis > 10.0  # sparse impulses, not Gaussian (3)
    with pytest.raises(ValueError, match="unknown noise kind"):
        synth_noise("babble", 0, 0, 1.0)

"""infer.composite: LLR, WSS, segSNR and CSIG / CBAK / COVL (Hu & Loizou 2008).

The component measures are checked against an independent implementation, ``pysepm-evo`` (a
test dependency, the ``dev`` extra), on a few signal pairs; the composites against the paper's
regression equations evaluated by hand.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import scipy.signal

from cleancodec.datagen.synth import synth_noise, synth_utterance
from cleancodec.infer import composite as cm
from cleancodec.infer.metrics import COMPOSITE_COLUMNS, score

SR = 16000
SECONDS = 3.0
FLOOR_DB = -60.0  # clean gets a noise floor this far below its level (no digital silence)
# Agreement with pysepm-evo measured on the pairs below: segSNR and WSS to ~1e-10; LLR to
# 1e-10 on noisy pairs and 7e-4 relative on the low-passed one, whose near-singular LPC fits
# round differently (its Levinson-Durbin loops frame by frame, ours runs on all frames at once).
SEGSNR_ATOL_DB = 1e-6
WSS_RTOL = 1e-6
LLR_RTOL = 2e-3


def clean_speech(seconds: float = SECONDS) -> np.ndarray:
    """A synthetic utterance with a -60 dB white floor: float64 ``[T]``."""
    x = synth_utterance(3, 2, 0, seconds).astype(np.float64)
    rng = np.random.default_rng(5)
    return x + 10 ** (FLOOR_DB / 20) * np.sqrt(np.mean(x ** 2)) * rng.standard_normal(len(x))


def at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return clean + gain * noise


def degraded(clean: np.ndarray) -> dict[str, np.ndarray]:
    """Named processed versions of ``clean``: additive noises, a low-pass, a scaled copy."""
    n = len(clean)
    b, a = scipy.signal.butter(4, 2000, fs=SR)
    return {
        "white_10dB": at_snr(clean, synth_noise("white", 1, 0, SECONDS)[:n], 10.0),
        "pink_0dB": at_snr(clean, synth_noise("pink", 1, 1, SECONDS)[:n], 0.0),
        "hum_5dB": at_snr(clean, synth_noise("hum", 1, 2, SECONDS)[:n], 5.0),
        "clicks_5dB": at_snr(clean, synth_noise("clicks", 1, 3, SECONDS)[:n], 5.0),
        "lowpass_2kHz": scipy.signal.lfilter(b, a, clean),
    }


@pytest.fixture(scope="module")
def pysepm():
    """pysepm-evo, made importable on current scipy: it imports ``scipy.signal.kaiser`` (moved
    to ``scipy.signal.windows``) and, at package import, ``srmrpy`` (used only by its SRMR
    measure, not needed here)."""
    if importlib.util.find_spec("pysepm_evo") is None:
        pytest.skip("pysepm-evo (the dev extra) is not installed")
    if not hasattr(scipy.signal, "kaiser"):
        scipy.signal.kaiser = scipy.signal.windows.kaiser
    try:
        importlib.import_module("srmrpy")
    except ImportError:
        sys.modules["srmrpy"] = types.ModuleType("srmrpy")
    return importlib.import_module("pysepm_evo")


@pytest.fixture(scope="module")
def pairs():
    clean = clean_speech()
    return clean, degraded(clean)


# --- against the independent implementation ---------------------------------------------------


@pytest.mark.slow  # ~20 s: pysepm-evo compiles its numba kernels and loops frame by frame
def test_components_match_pysepm(pysepm, pairs):
    clean, processed = pairs
    for name, est in processed.items():
        ours = (cm.llr(clean, est), cm.wss(clean, est), cm.segmental_snr(clean, est))
        theirs = (pysepm.llr(clean, est, SR, used_for_composite=True),
                  pysepm.wss(clean, est, SR), pysepm.SNRseg(clean, est, SR))
        assert ours[0] == pytest.approx(theirs[0], rel=LLR_RTOL), name
        assert ours[1] == pytest.approx(theirs[1], rel=WSS_RTOL), name
        assert ours[2] == pytest.approx(theirs[2], abs=SEGSNR_ATOL_DB), name


def test_the_pairs_span_a_range_of_values(pairs):
    """The comparison above is meaningful: the pairs give clearly different measures."""
    clean, processed = pairs
    wss = [cm.wss(clean, e) for e in processed.values()]
    seg = [cm.segmental_snr(clean, e) for e in processed.values()]
    assert max(wss) - min(wss) > 10 and max(seg) - min(seg) > 5


# --- the definitions --------------------------------------------------------------------------


def test_composites_are_the_papers_regressions_clipped_to_1_5():
    s = cm.composite_from(llr_v=0.5, wss_v=30.0, segsnr_v=5.0, pesq_v=2.5)
    assert s.csig == pytest.approx(3.093 - 1.029 * 0.5 + 0.603 * 2.5 - 0.009 * 30.0)
    assert s.cbak == pytest.approx(1.634 + 0.478 * 2.5 - 0.007 * 30.0 + 0.063 * 5.0)
    assert s.covl == pytest.approx(1.594 + 0.805 * 2.5 - 0.512 * 0.5 - 0.007 * 30.0)
    worst = cm.composite_from(llr_v=2.0, wss_v=150.0, segsnr_v=-10.0, pesq_v=1.0)
    best = cm.composite_from(llr_v=0.0, wss_v=0.0, segsnr_v=35.0, pesq_v=4.64)
    assert (worst.csig, worst.cbak, worst.covl) == (1.0, 1.0, 1.0)
    assert (best.csig, best.cbak, best.covl) == (5.0, 5.0, 5.0)
    assert np.isnan(cm.composite_from(0.5, 30.0, 5.0, float("nan")).csig)


def test_identical_signals_are_perfect(pairs):
    clean, _ = pairs
    assert cm.llr(clean, clean) == pytest.approx(0.0, abs=1e-9)
    assert cm.wss(clean, clean) == 0.0
    assert cm.segmental_snr(clean, clean) == cm.SEGSNR_RANGE_DB[1]


def test_more_noise_scores_worse(pairs):
    clean, _ = pairs
    noise = synth_noise("pink", 4, 0, SECONDS)[: len(clean)]
    scores = [cm.composite(clean, at_snr(clean, noise, snr)) for snr in (40.0, 30.0, 20.0)]
    for better, worse in zip(scores, scores[1:]):
        assert better.segsnr > worse.segsnr and better.wss < worse.wss
        assert better.llr < worse.llr
        assert better.csig > worse.csig and better.cbak > worse.cbak and better.covl > worse.covl


def test_segsnr_frames_are_limited_to_minus_10_and_35_db(pairs):
    clean, _ = pairs
    assert cm.segmental_snr(clean, np.zeros_like(clean)) == pytest.approx(0.0, abs=1e-9)
    assert cm.segmental_snr(clean, -clean) == pytest.approx(10 * np.log10(0.25), abs=1e-6)
    assert cm.segmental_snr(clean, 50 * clean) == cm.SEGSNR_RANGE_DB[0]


def test_wss_and_segsnr_ignore_a_common_gain(pairs):
    clean, processed = pairs
    est = processed["pink_0dB"]
    assert cm.wss(0.1 * clean, 0.1 * est) == pytest.approx(cm.wss(clean, est), rel=1e-9)
    assert cm.segmental_snr(0.1 * clean, 0.1 * est) == pytest.approx(
        cm.segmental_snr(clean, est), abs=1e-9)


def test_frames_are_30ms_with_75_percent_overlap():
    n, hop = cm.frame_geometry(SR)
    assert (n, hop) == (480, 120)
    assert cm.frame_geometry(8000) == (240, 60)
    x = np.arange(2000, dtype=np.float64)
    frames = cm.windowed_frames(x, SR)
    assert frames.shape == (2000 // hop - n // hop, n)  # the reference's count: 12 frames
    np.testing.assert_allclose(frames[1], x[hop:hop + n] * cm.hann_window(n))
    assert cm.hann_window(n).min() > 0 and cm.hann_window(n)[n // 2 - 1] == pytest.approx(1, 1e-4)
    with pytest.raises(ValueError, match="too short"):
        cm.windowed_frames(np.zeros(n), SR)


def test_levinson_solves_the_normal_equations():
    from scipy.linalg import solve_toeplitz

    rng = np.random.default_rng(0)
    frames = rng.standard_normal((4, 480)) * cm.hann_window(480)
    r = cm.autocorrelation(frames, 16)
    a = cm.levinson(r)
    for row, coef in zip(r, a):
        np.testing.assert_allclose(coef[1:], -solve_toeplitz(row[:16], row[1:]), rtol=1e-8)
    assert np.isnan(cm.levinson(np.zeros((1, 17)))).all()
    assert cm.lpc_order(8000) == 10 and cm.lpc_order(16000) == 16


def test_llr_leaves_out_digitally_silent_frames():
    x = clean_speech(1.0)
    x[: SR // 2] = 0.0
    y = x + 0.01 * np.random.default_rng(1).standard_normal(len(x))
    frames = cm.llr_frames(x, y)
    assert np.isnan(frames).any() and np.isfinite(frames).any()
    assert np.isfinite(cm.llr(x, y))


def test_nearest_peaks_follow_the_reference_convention():
    # bands:      0    1    2    3    4    5
    energy = np.array([[0.0, 5.0, 9.0, 3.0, 4.0, 1.0]])
    # slope > 0 at 0, 1, 3: climbing stops at the peak band m (2 or 4), C(m - 1) is taken;
    # slope <= 0 at 2, 4: the peak below (bands 2 and 4).
    np.testing.assert_array_equal(cm.nearest_peaks(energy), [[5.0, 5.0, 9.0, 3.0, 4.0]])
    assert cm.nearest_peaks(np.array([[3.0, 2.0, 1.0]])).tolist() == [[3.0, 3.0]]


def test_critical_band_filters():
    h = cm.critical_band_filters(1024, SR)
    assert h.shape == (25, 512)
    peak_bins = h.argmax(axis=1)
    np.testing.assert_array_equal(peak_bins, np.floor(cm.CRIT_CENTRE_HZ / (SR / 2) * 512))
    # narrower bands are scaled up to the narrowest's weight; below -30 dB is zero
    assert h.max(axis=1)[0] == pytest.approx(1.0) and h.max(axis=1)[-1] < h.max(axis=1)[0]
    assert h[h > 0].min() >= cm.WSS_FILTER_FLOOR


# --- in the evaluation metrics ----------------------------------------------------------------


def test_score_adds_the_composite_columns_with_the_pairs_pesq(pairs):
    from pesq import pesq

    clean, processed = pairs
    clean32 = clean.astype(np.float32)
    est = processed["white_10dB"].astype(np.float32)
    out = score(est, clean32, ("pesq", "composite"), None)
    assert set(COMPOSITE_COLUMNS) <= set(out.values) and not out.notes
    p = pesq(SR, clean32, est, "wb")
    assert out.values["pesq"] == pytest.approx(p)
    expected = cm.composite(clean32, est, p)
    for col in COMPOSITE_COLUMNS:
        assert out.values[col] == pytest.approx(getattr(expected, col), rel=1e-9)
    # without the pesq metric the composite computes wide-band PESQ itself
    alone = score(est, clean32, ("composite",), None)
    assert alone.values["csig"] == pytest.approx(expected.csig, rel=1e-9)
    assert "pesq" not in alone.values


def test_a_failing_composite_gives_nan_columns_and_a_note():
    short = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    out = score(short, short, ("composite",), None)
    assert all(np.isnan(out.values[c]) for c in COMPOSITE_COLUMNS)
    assert out.notes and out.notes[0].startswith("composite:")

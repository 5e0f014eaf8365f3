"""Composite speech-enhancement measures: LLR, WSS, segmental SNR, CSIG, CBAK and COVL.

Reference: Y. Hu and P. C. Loizou, "Evaluation of objective quality measures for speech
enhancement", IEEE Trans. Audio, Speech, and Language Processing 16(1):229-238, 2008; the
measures and their set-up are also described in P. C. Loizou, *Speech Enhancement: Theory and
Practice* (CRC Press, 2nd ed. 2013), ch. 11, whose reference implementation produced the
numbers that speech-enhancement papers (VoiceBank+DEMAND) report. Written here from those
descriptions with numpy / scipy.

Analysis (every measure): frames of 30 ms with 75 % overlap (hop 7.5 ms), each multiplied by
a Hann window ``w[n] = 0.5 (1 - cos(2 pi n / (N + 1)))``, n = 1..N. The frame count follows the
reference implementation, ``floor(T / hop - N / hop)``, so the last complete frame is not used.
Both signals are ``[T]`` float at ``sample_rate``; a pair is cut to the shorter length.

- **LLR** (log-likelihood ratio, Itakura): per frame ``d = log((a_p R_c a_p') / (a_c R_c a_c'))``
  with ``a_c``, ``a_p`` the LPC polynomials of the clean and processed frame (autocorrelation
  method, Levinson-Durbin) and ``R_c`` the clean frame's autocorrelation (Toeplitz) matrix. LPC
  order 10 below 10 kHz sampling (the paper's 8 kHz material) and 16 at 16 kHz (the reference
  implementation's rule). The mean is taken over the lowest 95 % of frames, to reduce the
  influence of outliers. The stand-alone LLR of Hu & Loizou is further limited to [0, 2] per
  frame; the authors' composite implementation does not limit it, and neither does this module
  (the LLR column is the value that enters CSIG and COVL). Frames where either LPC fit is
  undefined (digital silence) are left out.
- **WSS** (weighted spectral slope, Klatt 1982): 25 critical-band filters (Gaussian-shaped,
  ``exp(-11 ((k - k_c) / bw)^2)`` over FFT bins, scaled by ``bw_min / bw`` so the bands carry
  equal weight, zero below the filter's -30 dB point; centres 50 Hz … 3.6 kHz, the table of the
  reference implementation, used at every sampling rate) on the power spectrum of an FFT of
  ``2^ceil(log2(2 N))`` points; band energies in dB (floored at -100 dB); slopes
  ``S(j) = C(j+1) - C(j)``; weights ``W(j) = K_max / (K_max + C_max - C(j)) *
  K_locmax / (K_locmax + C_locmax(j) - C(j))`` with ``K_max = 20``, ``K_locmax = 1``, ``C_max``
  the frame's largest band energy and ``C_locmax(j)`` the nearest spectral peak (see
  :func:`nearest_peaks` for the reference implementation's convention, kept so that numbers
  match published ones), averaged between clean and processed; per frame
  ``sum W (S_c - S_p)^2 / sum W``; mean over the lowest 95 % of frames.
- **segSNR**: per frame ``10 log10(sum c^2 / (sum (c - p)^2 + eps) + eps)`` (eps = float64
  machine epsilon), each limited to [-10, 35] dB, averaged over all frames.
- **Composites** (Hu & Loizou 2008, eqs. for the P.835 scales), each limited to [1, 5]::

      CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS
      CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR
      COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS

PESQ: the paper fitted the regressions with narrow-band PESQ (P.862) on 8 kHz speech. At
16 kHz this module is fed **wide-band PESQ (P.862.2, the ``pesq`` package's ``"wb"`` mode)**,
as the VoiceBank+DEMAND literature does; numbers are therefore comparable with those papers, not
with narrow-band ones.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16000
FRAME_SECONDS = 0.030
HOPS_PER_FRAME = 4  # 75 % overlap
KEEP_FRACTION = 0.95  # LLR and WSS average the lowest 95 % of frame values
SEGSNR_RANGE_DB = (-10.0, 35.0)
LPC_ORDER_NARROW, LPC_ORDER_WIDE, WIDE_FROM_HZ = 10, 16, 10000
WSS_K_MAX, WSS_K_LOCMAX = 20.0, 1.0
WSS_FILTER_SHAPE = 11.0  # Gaussian exponent: exp(-shape * ((k - k_c) / bw)^2)
WSS_FILTER_FLOOR = math.exp(-30.0 / (2.0 * 2.303))  # the filter's -30 dB point
WSS_ENERGY_FLOOR = 1e-10  # -100 dB
EPS = float(np.finfo(np.float64).eps)
COMPOSITE_RANGE = (1.0, 5.0)
# (intercept, LLR, PESQ, WSS, segSNR) coefficients of Hu & Loizou (2008)
CSIG_COEF = (3.093, -1.029, 0.603, -0.009, 0.0)
CBAK_COEF = (1.634, 0.0, 0.478, -0.007, 0.063)
COVL_COEF = (1.594, -0.512, 0.805, -0.007, 0.0)

# Critical bands (Hz) of the WSS filter bank, as tabulated by Loizou's reference implementation.
CRIT_CENTRE_HZ = np.array([
    50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717, 904.128,
    1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97,
    2978.04, 3276.17, 3597.63])
CRIT_BANDWIDTH_HZ = np.array([
    70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256,
    127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072,
    298.126, 321.465, 346.136])


@dataclass(frozen=True)
class CompositeScores:
    """The three component measures and the three composites of one signal pair."""

    llr: float
    wss: float
    segsnr: float
    csig: float
    cbak: float
    covl: float

    def as_dict(self) -> dict[str, float]:
        """Column name → value."""
        return asdict(self)


# --- framing ----------------------------------------------------------------------------------


def frame_geometry(sample_rate: int) -> tuple[int, int]:
    """(frame length N, hop) in samples: 30 ms frames, 75 % overlap."""
    n = round(FRAME_SECONDS * sample_rate)
    return n, n // HOPS_PER_FRAME


def hann_window(n: int) -> np.ndarray:
    """``0.5 (1 - cos(2 pi k / (n + 1)))``, k = 1..n: ``[n]`` (no zero end points)."""
    k = np.arange(1, n + 1)
    return 0.5 * (1.0 - np.cos(2.0 * np.pi * k / (n + 1)))


def windowed_frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Hann-windowed analysis frames of ``x`` ``[T]`` → ``[F, N]`` float64.

    Raises ValueError when ``x`` is shorter than two frames' worth of hops.
    """
    n, hop = frame_geometry(sample_rate)
    count = int(math.floor(len(x) / hop - n / hop))
    if count < 1:
        raise ValueError(f"signal of {len(x)} samples is too short for {n}-sample frames "
                         f"(at least {n + hop} needed)")
    idx = np.arange(count)[:, None] * hop + np.arange(n)[None, :]
    return np.asarray(x, np.float64)[idx] * hann_window(n)


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = min(len(reference), len(estimate))
    return (np.asarray(reference, np.float64)[:t], np.asarray(estimate, np.float64)[:t])


def _lowest_mean(values: np.ndarray, keep: float = KEEP_FRACTION) -> float:
    """Mean of the lowest ``round(keep * n)`` finite values (NaN when none)."""
    v = np.sort(values[np.isfinite(values)])
    k = round(keep * v.size)
    return float(v[:k].mean()) if k else float("nan")


# --- segmental SNR ----------------------------------------------------------------------------


def segmental_snr(reference: np.ndarray, estimate: np.ndarray,
                  sample_rate: int = SAMPLE_RATE) -> float:
    """Mean frame SNR (dB), each frame limited to [-10, 35] dB."""
    ref, est = _pair(reference, estimate)
    c, p = windowed_frames(ref, sample_rate), windowed_frames(est, sample_rate)
    signal = np.sum(c ** 2, axis=1)
    noise = np.sum((c - p) ** 2, axis=1)
    snr = 10.0 * np.log10(signal / (noise + EPS) + EPS)
    return float(np.clip(snr, *SEGSNR_RANGE_DB).mean())


# --- LLR --------------------------------------------------------------------------------------


def lpc_order(sample_rate: int) -> int:
    """10 for narrow-band sampling, 16 from 10 kHz up."""
    return LPC_ORDER_WIDE if sample_rate >= WIDE_FROM_HZ else LPC_ORDER_NARROW


def autocorrelation(frames: np.ndarray, order: int) -> np.ndarray:
    """Lags 0..order of each frame: ``[F, N]`` → ``[F, order + 1]``."""
    n = frames.shape[1]
    return np.stack([np.sum(frames[:, : n - k] * frames[:, k:], axis=1)
                     for k in range(order + 1)], axis=1)


def levinson(r: np.ndarray) -> np.ndarray:
    """Prediction-error polynomials ``[1, a_1..a_P]`` from autocorrelations ``[F, P + 1]``.

    Levinson-Durbin on every row at once; rows whose recursion breaks down (zero energy) come
    back as NaN.
    """
    frames, order = r.shape[0], r.shape[1] - 1
    a = np.zeros((frames, order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(1, order + 1):
            acc = r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1:0:-1], axis=1)
            k = -acc / err
            a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
            a[:, i] = k
            err = err * (1.0 - k ** 2)
    a[~np.isfinite(a).all(axis=1)] = np.nan
    return a


def _quadratic_toeplitz(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``a R a'`` per row, ``R`` the symmetric Toeplitz matrix of ``r``: ``[F, P+1]`` → ``[F]``."""
    p = a.shape[1]
    lags = np.abs(np.arange(p)[:, None] - np.arange(p)[None, :])
    return np.einsum("fi,fij,fj->f", a, r[:, lags], a)


def llr_frames(reference: np.ndarray, estimate: np.ndarray,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame log-likelihood ratios ``[F]`` (unlimited; NaN where an LPC fit is undefined)."""
    ref, est = _pair(reference, estimate)
    order = lpc_order(sample_rate)
    r_c = autocorrelation(windowed_frames(ref, sample_rate), order)
    r_p = autocorrelation(windowed_frames(est, sample_rate), order)
    a_c, a_p = levinson(r_c), levinson(r_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_quadratic_toeplitz(a_p, r_c) / _quadratic_toeplitz(a_c, r_c))


def llr(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Log-likelihood ratio: mean of the lowest 95 % of frame values (as in the composites)."""
    return _lowest_mean(llr_frames(reference, estimate, sample_rate))


# --- WSS --------------------------------------------------------------------------------------


def critical_band_filters(n_fft: int, sample_rate: int) -> np.ndarray:
    """Gaussian critical-band weights over bins 0 .. n_fft/2 - 1: ``[25, n_fft // 2]``."""
    half = n_fft // 2
    nyquist = sample_rate / 2.0
    centre_bin = np.floor(CRIT_CENTRE_HZ / nyquist * half)[:, None]
    width_bin = (CRIT_BANDWIDTH_HZ / nyquist * half)[:, None]
    bins = np.arange(half)[None, :]
    gain = (CRIT_BANDWIDTH_HZ.min() / CRIT_BANDWIDTH_HZ)[:, None]
    h = gain * np.exp(-WSS_FILTER_SHAPE * ((bins - centre_bin) / width_bin) ** 2)
    return np.where(h > WSS_FILTER_FLOOR, h, 0.0)


def _band_db(frames: np.ndarray, filters: np.ndarray, n_fft: int) -> np.ndarray:
    """Critical-band energies in dB: ``[F, N]`` → ``[F, 25]``."""
    power = np.abs(np.fft.rfft(frames, n_fft, axis=1)[:, : n_fft // 2]) ** 2
    return 10.0 * np.log10(np.maximum(power @ filters.T, WSS_ENERGY_FLOOR))


def nearest_peaks(energy: np.ndarray) -> np.ndarray:
    """``C_locmax``: for each band j < last, a nearby peak's energy: ``[F, B]`` → ``[F, B-1]``.

    Where the spectrum falls or stays flat at j (slope ``C(j+1) - C(j) <= 0``) this is the peak
    below: the band just above the last rising slope at or below j (band 0 if none). Where it
    rises, the reference implementation climbs to the first band m > j from which it no longer
    rises (the peak, or the last band) and takes the band *below* m, i.e. ``C(m - 1)``; that
    convention is kept here, since published CSIG / COVL values were computed with it (taking
    ``C(m)`` instead changes WSS by a few per cent).
    """
    slope = np.diff(energy, axis=1)
    frames, bands = energy.shape
    rising = slope > 0
    # up[f, j]: first band m >= j + 1 with slope[m] <= 0, or the last band; walked from the top
    up = np.empty((frames, bands - 1), dtype=np.int64)
    nxt = np.full(frames, bands - 1)
    for j in range(bands - 2, -1, -1):
        up[:, j] = nxt
        nxt = np.where(rising[:, j], nxt, j)
    # down[f, j]: the band just above the last m < j with slope[m] > 0 (band 0 if none)
    down = np.empty((frames, bands - 1), dtype=np.int64)
    prev = np.zeros(frames, dtype=np.int64)
    for j in range(bands - 1):
        down[:, j] = prev
        prev = np.where(rising[:, j], j + 1, prev)
    return np.take_along_axis(energy, np.where(rising, up - 1, down), axis=1)


def _slope_weights(energy: np.ndarray) -> np.ndarray:
    """Klatt's weights per slope band: ``[F, B]`` energies (dB) → ``[F, B-1]``."""
    c = energy[:, :-1]
    c_max = energy.max(axis=1, keepdims=True)
    c_loc = nearest_peaks(energy)
    return (WSS_K_MAX / (WSS_K_MAX + c_max - c)) * (WSS_K_LOCMAX / (WSS_K_LOCMAX + c_loc - c))


def wss_frames(reference: np.ndarray, estimate: np.ndarray,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame weighted spectral slope distances ``[F]``."""
    ref, est = _pair(reference, estimate)
    n, _ = frame_geometry(sample_rate)
    n_fft = 2 ** math.ceil(math.log2(2 * n))
    filters = critical_band_filters(n_fft, sample_rate)
    e_c = _band_db(windowed_frames(ref, sample_rate), filters, n_fft)
    e_p = _band_db(windowed_frames(est, sample_rate), filters, n_fft)
    w = 0.5 * (_slope_weights(e_c) + _slope_weights(e_p))
    diff = np.diff(e_c, axis=1) - np.diff(e_p, axis=1)
    return np.sum(w * diff ** 2, axis=1) / np.sum(w, axis=1)


def wss(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Weighted spectral slope distance: mean of the lowest 95 % of frames."""
    return _lowest_mean(wss_frames(reference, estimate, sample_rate))


# --- composites -------------------------------------------------------------------------------


def _combine(coef: tuple[float, ...], llr_v: float, pesq_v: float, wss_v: float,
             segsnr_v: float) -> float:
    value = (coef[0] + coef[1] * llr_v + coef[2] * pesq_v + coef[3] * wss_v
             + coef[4] * segsnr_v)
    return float(np.clip(value, *COMPOSITE_RANGE))


def composite_from(llr_v: float, wss_v: float, segsnr_v: float, pesq_v: float
                   ) -> CompositeScores:
    """CSIG, CBAK, COVL from the component measures and a PESQ value (NaN propagates)."""
    args = (llr_v, pesq_v, wss_v, segsnr_v)
    return CompositeScores(llr_v, wss_v, segsnr_v, _combine(CSIG_COEF, *args),
                           _combine(CBAK_COEF, *args), _combine(COVL_COEF, *args))


def composite(reference: np.ndarray, estimate: np.ndarray, pesq_value: float | None = None,
              sample_rate: int = SAMPLE_RATE) -> CompositeScores:
    """LLR, WSS, segSNR and CSIG / CBAK / COVL of ``estimate`` against ``reference`` ``[T]``.

    ``pesq_value``: the pair's PESQ when already computed; otherwise wide-band PESQ
    (``pesq.pesq(16000, ref, deg, "wb")``, which needs ``sample_rate`` 16000).
    """
    ref, est = _pair(reference, estimate)
    if pesq_value is None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"wide-band PESQ needs {SAMPLE_RATE} Hz audio, got {sample_rate} "
                             "Hz; pass pesq_value")
        from pesq import pesq

        pesq_value = float(pesq(sample_rate, ref, est, "wb"))
    return composite_from(llr(ref, est, sample_rate), wss(ref, est, sample_rate),
                          segmental_snr(ref, est, sample_rate), pesq_value)


__all__ = ["COMPOSITE_RANGE", "CompositeScores", "composite", "composite_from",
           "critical_band_filters", "frame_geometry", "hann_window", "levinson", "llr",
           "llr_frames", "lpc_order", "nearest_peaks", "segmental_snr", "windowed_frames", "wss",
           "wss_frames"]

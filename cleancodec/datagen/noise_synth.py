"""The project's noise synthesiser: white, pink (1/f) and brown (1/f²) noise, mains hum, sparse
clicks, vinyl-like crackle, babble cut from speech files, and non-stationary mixtures of these
(:func:`generate`, used by the demo corpus), and the tiny corpus's noise clips
(:func:`synth_noise`). Everything is a pure function of its seed and parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.signal import lfilter

from cleancodec.core.audio import read_mono, resample
from cleancodec.core.config import require
from cleancodec.pipeline.mix import EPS, rms

NOISE_KINDS = ("white", "pink", "hum", "clicks")  # the tiny corpus's noise folders
GENERATED_KINDS = ("white", "pink", "brown", "hum", "crackle", "babble", "nonstationary")
NOISE_RMS_DBFS = -25.0
PEAK_LIMIT = 0.9
GENERATED_PEAK_LIMIT = 0.99  # peak limit of the demo corpus's generated noise
NOISE_STREAM_OFFSET = 1000  # tiny-corpus noise draws from streams [seed, 1000 + kind, index]
MAINS_HZ = (50.0, 60.0)
CLICK_RATE_HZ = 8.0
CLICK_DECAY_S = 0.004
CLICK_LENGTH_TAUS = 5  # a click lasts this many decay time constants
CLICK_FLOOR = 0.01  # white floor under the clicks, relative to a full click
CLICK_AMPLITUDE = (0.5, 1.0)
COLOR_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ f^-exponent
COLOR_HIGHPASS_HZ = 20.0  # no energy below this (keeps brown noise free of DC drift)
HUM_HARMONICS = 12
TINY_HUM_HARMONICS = 7  # the tiny corpus's hum keeps to the first seven harmonics
HUM_DETUNE = (0.998, 1.002)  # the mains frequency is off by a factor in this range
HUM_WEIGHT_JITTER = (0.5, 1.0)  # each harmonic's weight is scaled by a factor in this range
HUM_DECAY_EXPONENT = (0.5, 1.5)  # harmonic k has amplitude ~ k^-exponent
HUM_EVEN_WEIGHT = 0.5  # even harmonics relative to odd ones (transformer buzz)
HUM_FLOOR_DB = -40.0  # white floor under the hum, relative to the hum
CRACKLE_CLICK_RATE_HZ = (5.0, 40.0)
CRACKLE_POP_RATE_HZ = (0.2, 1.5)
CRACKLE_CLICK_DB = (-30.0, 0.0)
CRACKLE_POP_DB = (0.0, 10.0)
CRACKLE_DECAY_MS = (0.1, 1.0)
CRACKLE_FLOOR_DB = -30.0  # pink surface noise under the clicks, relative to the clicks
MS_PER_S = 1000.0
BABBLE_SEGMENT_SECONDS = (2.0, 6.0)
BABBLE_TALKER_GAIN_DB = 3.0  # each talker's level varies by up to ± this much
ENVELOPE_RATE_HZ = (0.1, 1.0)  # nonstationary: speed of the slow level changes
ENVELOPE_DEPTH_DB = 15.0
GATE_PROB = 0.5  # nonstationary: chance that a component is gated on/off in bursts
GATE_SEGMENT_SECONDS = (0.3, 2.0)
GATE_RAMP_S = 0.01
STATIONARY_FOR_MIXTURES = ("white", "pink", "brown", "hum", "crackle")


def normalise(x: np.ndarray, level_dbfs: float, peak_limit: float = PEAK_LIMIT) -> np.ndarray:
    """``x`` ``[n]`` scaled to RMS ``level_dbfs``, then down to peak ``peak_limit`` if louder.

    Returns float32 ``[n]``.
    """
    y = np.asarray(x, dtype=np.float64) * (10.0 ** (level_dbfs / 20.0) / rms(x))
    peak = float(np.max(np.abs(y)))
    if peak > peak_limit:
        y *= peak_limit / peak
    return y.astype(np.float32)



@dataclass
class NoiseSynthConfig:
    """Settings of the noise synthesiser (the demo's ``generated`` section extends these)."""

    level_dbfs: float = NOISE_RMS_DBFS
    babble_min_talkers: int = 4
    babble_max_talkers: int = 8
    babble_rate_min: float = 0.85  # resampling factor range: varies pitch and tempo per talker
    babble_rate_max: float = 1.2
    hum_mains_hz: list[float] = field(default_factory=lambda: list(MAINS_HZ))

    where: ClassVar[str] = "noise synthesiser"  # the key path named by errors

    def __post_init__(self) -> None:
        require(1 <= self.babble_min_talkers <= self.babble_max_talkers, self.where,
                "needs 1 <= babble_min_talkers <= babble_max_talkers")


@dataclass
class BabbleSource:
    """A clean speech file a babble talker may be cut from."""

    path: Path
    frames: int  # length in samples


def colored(rng: np.random.Generator, n: int, sample_rate: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ ``f^-exponent`` (0 white, 1 pink, 2 brown): ``[n]``."""
    white = rng.standard_normal(n)
    if exponent == 0.0:
        return white
    spec = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shape = np.zeros_like(freqs)
    keep = freqs >= COLOR_HIGHPASS_HZ
    shape[keep] = freqs[keep] ** (-exponent / 2.0)
    return np.fft.irfft(spec * shape, n)


def hum(rng: np.random.Generator, n: int, sample_rate: int, mains_hz: list[float],
        harmonics: int = HUM_HARMONICS) -> np.ndarray:
    """Mains hum: a fundamental from ``mains_hz`` plus up to ``harmonics - 1`` decaying
    harmonics (odd ones stronger) over a faint white floor: ``[n]``."""
    f0 = float(rng.choice(mains_hz)) * rng.uniform(*HUM_DETUNE)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    decay = rng.uniform(*HUM_DECAY_EXPONENT)
    nyquist = sample_rate / 2.0
    for k in range(1, harmonics + 1):
        if k * f0 >= nyquist:
            break
        parity = 1.0 if k % 2 else HUM_EVEN_WEIGHT
        weight = parity * k ** (-decay) * rng.uniform(*HUM_WEIGHT_JITTER)
        out += weight * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    floor = rng.standard_normal(n) * rms(out) * 10.0 ** (HUM_FLOOR_DB / 20.0)
    return out + floor


def clicks(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Sparse decaying clicks (about ``CLICK_RATE_HZ`` a second) over a faint floor: ``[n]``."""
    x = CLICK_FLOOR * rng.standard_normal(n)
    tau = CLICK_DECAY_S * sample_rate
    decay = np.exp(-np.arange(int(tau * CLICK_LENGTH_TAUS)) / tau)
    for pos in np.flatnonzero(rng.uniform(size=n) < CLICK_RATE_HZ / sample_rate):
        click = rng.choice([-1.0, 1.0]) * rng.uniform(*CLICK_AMPLITUDE) * decay
        stop = min(n, pos + len(click))
        x[pos:stop] += click[:stop - pos]
    return x


def _impulses(rng: np.random.Generator, n: int, sample_rate: int, rate_hz: float,
              amp_db: tuple[float, float]) -> np.ndarray:
    count = rng.poisson(rate_hz * n / sample_rate)
    x = np.zeros(n)
    pos = rng.integers(0, n, size=count)
    amps = 10.0 ** (rng.uniform(*amp_db, size=count) / 20.0) * rng.choice([-1.0, 1.0], count)
    np.add.at(x, pos, amps)
    return x


def crackle(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Vinyl-like clicks and pops (decaying impulses) over pink surface noise: ``[n]``."""
    clicks_ = _impulses(rng, n, sample_rate, rng.uniform(*CRACKLE_CLICK_RATE_HZ),
                        CRACKLE_CLICK_DB)
    pops = _impulses(rng, n, sample_rate, rng.uniform(*CRACKLE_POP_RATE_HZ), CRACKLE_POP_DB)
    tau = rng.uniform(*CRACKLE_DECAY_MS) / MS_PER_S * sample_rate
    pole = np.exp(-1.0 / tau)
    out = lfilter([1.0], [1.0, -pole], clicks_ + pops)
    surface = colored(rng, n, sample_rate, COLOR_EXPONENT["pink"])
    return out + surface * (rms(out) / rms(surface)) * 10.0 ** (CRACKLE_FLOOR_DB / 20.0)


def stationary(kind: str, rng: np.random.Generator, n: int, sample_rate: int,
               cfg: NoiseSynthConfig) -> np.ndarray:
    """One of the stationary kinds, unnormalised: ``[n]``."""
    if kind in COLOR_EXPONENT:
        return colored(rng, n, sample_rate, COLOR_EXPONENT[kind])
    if kind == "hum":
        return hum(rng, n, sample_rate, cfg.hum_mains_hz)
    if kind == "crackle":
        return crackle(rng, n, sample_rate)
    if kind == "clicks":
        return clicks(rng, n, sample_rate)
    raise ValueError(f"not a stationary noise kind: {kind!r}")


def slow_envelope(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Slow random level changes (0 to -``ENVELOPE_DEPTH_DB`` dB) as a linear gain ``[n]``."""
    rate = rng.uniform(*ENVELOPE_RATE_HZ)
    knots = max(2, int(np.ceil(n / sample_rate * rate)) + 2)
    db = rng.uniform(-ENVELOPE_DEPTH_DB, 0.0, size=knots)
    curve = np.interp(np.linspace(0, knots - 1, n), np.arange(knots), db)
    return 10.0 ** (curve / 20.0)


def gate(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """On/off bursts with short ramps: a 0..1 gain ``[n]`` (on about half of the time)."""
    g = np.zeros(n)
    pos, on = 0, bool(rng.integers(2))
    while pos < n:
        length = int(rng.uniform(*GATE_SEGMENT_SECONDS) * sample_rate)
        g[pos:pos + length] = 1.0 if on else 0.0
        pos, on = pos + length, not on
    ramp = max(1, int(GATE_RAMP_S * sample_rate))
    return np.convolve(g, np.ones(ramp) / ramp, mode="same")


def nonstationary(rng: np.random.Generator, n: int, sample_rate: int,
                  cfg: NoiseSynthConfig) -> np.ndarray:
    """Two stationary kinds under independent slow envelopes, each maybe gated: ``[n]``."""
    kinds = rng.choice(STATIONARY_FOR_MIXTURES, size=2, replace=False)
    out = np.zeros(n)
    for kind in kinds:
        part = stationary(str(kind), rng, n, sample_rate, cfg)
        part = part / rms(part) * slow_envelope(rng, n, sample_rate)
        if rng.uniform() < GATE_PROB:
            part = part * gate(rng, n, sample_rate)
        out += part
    if rms(out) < EPS:  # both gated off for the whole file: fall back to the first, ungated
        out = stationary(str(kinds[0]), rng, n, sample_rate, cfg)
    return out


def _talker_stream(rng: np.random.Generator, n: int, sample_rate: int,
                   sources: list[BabbleSource], cfg: NoiseSynthConfig
                   ) -> tuple[np.ndarray, set[str]]:
    rate = rng.uniform(cfg.babble_rate_min, cfg.babble_rate_max)
    pieces, have, used = [], 0, set()
    while have < n:
        src = sources[int(rng.integers(len(sources)))]
        seg = int(rng.uniform(*BABBLE_SEGMENT_SECONDS) * sample_rate)
        start = int(rng.integers(0, max(1, src.frames - seg)))
        audio, _ = read_mono(src.path, start, start + seg)
        # played back `rate` times faster: pitch and tempo change together, like another voice
        piece = resample(audio, int(round(sample_rate * rate)), sample_rate)
        pieces.append(piece)
        have += len(piece)
        used.add(str(src.path))
    stream = np.concatenate(pieces)[:n].astype(np.float64)
    return stream / rms(stream), used


def babble(rng: np.random.Generator, n: int, sample_rate: int, sources: list[BabbleSource],
           cfg: NoiseSynthConfig) -> tuple[np.ndarray, set[str]]:
    """Sum of several talker streams cut from ``sources`` → ``([n], paths used)``."""
    if not sources:
        raise ValueError("babble needs clean speech files of training speakers")
    talkers = int(rng.integers(cfg.babble_min_talkers, cfg.babble_max_talkers + 1))
    out, used = np.zeros(n), set()
    for _ in range(talkers):
        stream, paths = _talker_stream(rng, n, sample_rate, sources, cfg)
        gain = 10.0 ** (rng.uniform(-BABBLE_TALKER_GAIN_DB, BABBLE_TALKER_GAIN_DB) / 20.0)
        out += gain * stream
        used |= paths
    return out, used


def generate(kind: str, rng: np.random.Generator, n: int, sample_rate: int,
             cfg: NoiseSynthConfig, babble_sources: list[BabbleSource] | None = None
             ) -> tuple[np.ndarray, set[str]]:
    """One noise file of ``kind`` → (float32 ``[n]`` at ``cfg.level_dbfs``, input files used).

    Kinds: :data:`GENERATED_KINDS`. The peak is kept at or under ``GENERATED_PEAK_LIMIT``.
    """
    used: set[str] = set()
    if kind == "babble":
        raw, used = babble(rng, n, sample_rate, babble_sources or [], cfg)
    elif kind == "nonstationary":
        raw = nonstationary(rng, n, sample_rate, cfg)
    else:
        raw = stationary(kind, rng, n, sample_rate, cfg)
    return normalise(raw, cfg.level_dbfs, GENERATED_PEAK_LIMIT), used


def synth_noise(kind: str, seed: int, index: int, seconds: float,
                sample_rate: int = 16000) -> np.ndarray:
    """One noise clip of the tiny corpus, ``kind`` one of :data:`NOISE_KINDS`.

    Returns float32 ``ndarray[T]`` with ``T = round(seconds * sample_rate)``, RMS about
    −25 dBFS, peak ≤ 0.9.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose from {NOISE_KINDS}")
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng([seed, NOISE_KINDS.index(kind) + NOISE_STREAM_OFFSET, index])
    if kind == "hum":
        raw = hum(rng, n, sample_rate, list(MAINS_HZ), TINY_HUM_HARMONICS)
    else:
        raw = stationary(kind, rng, n, sample_rate, NoiseSynthConfig())
    return normalise(raw, NOISE_RMS_DBFS)

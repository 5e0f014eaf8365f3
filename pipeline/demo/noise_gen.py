"""Seeded generated noise: every file is a pure function of (seed, kind, split, index).

Kinds: ``white``; ``pink`` (1/f) and ``brown`` (1/f²) by spectral shaping; ``hum`` (mains
fundamental at 50 or 60 Hz with decaying harmonics, odd ones stronger, over a faint floor);
``crackle`` (clicks and pops at Poisson onsets over surface noise); ``babble`` (4–8 talkers,
each a stream of speech cut from *training* speakers' clean files, resampled per talker to
change pitch and tempo); ``nonstationary`` (two of the stationary kinds under independent slow
random envelopes and on/off gating). All are scaled to ``generated.level_dbfs`` RMS.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from cleancodec.pipeline.audio import resample
from cleancodec.pipeline.demo.config import GeneratedNoiseConfig
from cleancodec.pipeline.mix import rms

EPS = 1e-12
PEAK_LIMIT = 0.99
COLOR_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ f^-exponent
COLOR_HIGHPASS_HZ = 20.0  # no energy below this (keeps brown noise free of DC drift)
HUM_HARMONICS = 12
HUM_EVEN_WEIGHT = 0.5  # even harmonics relative to odd ones (transformer buzz)
HUM_FLOOR_DB = -40.0  # white floor under the hum, relative to the hum
CRACKLE_CLICK_RATE_HZ = (5.0, 40.0)
CRACKLE_POP_RATE_HZ = (0.2, 1.5)
CRACKLE_DECAY_MS = (0.1, 1.0)
CRACKLE_FLOOR_DB = -30.0  # pink surface noise under the clicks, relative to the clicks
BABBLE_SEGMENT_SECONDS = (2.0, 6.0)
BABBLE_TALKER_GAIN_DB = 3.0  # each talker's level varies by up to ± this much
ENVELOPE_RATE_HZ = (0.1, 1.0)  # nonstationary: speed of the slow level changes
ENVELOPE_DEPTH_DB = 15.0
GATE_PROB = 0.5  # nonstationary: chance that a component is gated on/off in bursts
GATE_SEGMENT_SECONDS = (0.3, 2.0)
STATIONARY_FOR_MIXTURES = ("white", "pink", "brown", "hum", "crackle")


@dataclass
class BabbleSource:
    """A clean speech file a babble talker may be cut from."""

    path: Path
    frames: int  # length in samples


def _normalise(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    y = np.asarray(x, dtype=np.float64) * (10.0 ** (level_dbfs / 20.0) / rms(x))
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_LIMIT:
        y *= PEAK_LIMIT / peak
    return y.astype(np.float32)


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


def hum(rng: np.random.Generator, n: int, sample_rate: int,
        cfg: GeneratedNoiseConfig) -> np.ndarray:
    """Mains hum: fundamental from ``cfg.hum_mains_hz`` plus decaying harmonics: ``[n]``."""
    f0 = float(rng.choice(cfg.hum_mains_hz)) * rng.uniform(0.998, 1.002)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    decay = rng.uniform(0.5, 1.5)
    nyquist = sample_rate / 2.0
    for k in range(1, HUM_HARMONICS + 1):
        if k * f0 >= nyquist:
            break
        weight = (1.0 if k % 2 else HUM_EVEN_WEIGHT) * k ** (-decay) * rng.uniform(0.5, 1.0)
        out += weight * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    floor = rng.standard_normal(n) * rms(out) * 10.0 ** (HUM_FLOOR_DB / 20.0)
    return out + floor


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
    clicks = _impulses(rng, n, sample_rate, rng.uniform(*CRACKLE_CLICK_RATE_HZ), (-30.0, 0.0))
    pops = _impulses(rng, n, sample_rate, rng.uniform(*CRACKLE_POP_RATE_HZ), (0.0, 10.0))
    tau = rng.uniform(*CRACKLE_DECAY_MS) / 1000.0 * sample_rate
    pole = np.exp(-1.0 / tau)
    out = lfilter([1.0], [1.0, -pole], clicks + pops)
    surface = colored(rng, n, sample_rate, COLOR_EXPONENT["pink"])
    return out + surface * (rms(out) / rms(surface)) * 10.0 ** (CRACKLE_FLOOR_DB / 20.0)


def stationary(kind: str, rng: np.random.Generator, n: int, sample_rate: int,
               cfg: GeneratedNoiseConfig) -> np.ndarray:
    """One of the stationary kinds, unnormalised: ``[n]``."""
    if kind in COLOR_EXPONENT:
        return colored(rng, n, sample_rate, COLOR_EXPONENT[kind])
    if kind == "hum":
        return hum(rng, n, sample_rate, cfg)
    if kind == "crackle":
        return crackle(rng, n, sample_rate)
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
    ramp = max(1, int(0.01 * sample_rate))
    return np.convolve(g, np.ones(ramp) / ramp, mode="same")


def nonstationary(rng: np.random.Generator, n: int, sample_rate: int,
                  cfg: GeneratedNoiseConfig) -> np.ndarray:
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
                   sources: list[BabbleSource], cfg: GeneratedNoiseConfig
                   ) -> tuple[np.ndarray, set[str]]:
    rate = rng.uniform(cfg.babble_rate_min, cfg.babble_rate_max)
    pieces, have, used = [], 0, set()
    while have < n:
        src = sources[int(rng.integers(len(sources)))]
        seg = int(rng.uniform(*BABBLE_SEGMENT_SECONDS) * sample_rate)
        start = int(rng.integers(0, max(1, src.frames - seg)))
        audio, _ = sf.read(str(src.path), start=start, stop=start + seg, dtype="float32")
        audio = audio if audio.ndim == 1 else audio.mean(axis=1)
        # played back `rate` times faster: pitch and tempo change together, like another voice
        piece = resample(audio, int(round(sample_rate * rate)), sample_rate)
        pieces.append(piece)
        have += len(piece)
        used.add(str(src.path))
    stream = np.concatenate(pieces)[:n].astype(np.float64)
    return stream / rms(stream), used


def babble(rng: np.random.Generator, n: int, sample_rate: int, sources: list[BabbleSource],
           cfg: GeneratedNoiseConfig) -> tuple[np.ndarray, set[str]]:
    """Sum of 4–8 talker streams cut from ``sources`` → ``([n], paths used)``."""
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
             cfg: GeneratedNoiseConfig, babble_sources: list[BabbleSource] | None = None
             ) -> tuple[np.ndarray, set[str]]:
    """One noise file of ``kind`` → (float32 ``[n]`` at ``cfg.level_dbfs``, input files used)."""
    used: set[str] = set()
    if kind == "babble":
        raw, used = babble(rng, n, sample_rate, babble_sources or [], cfg)
    elif kind == "nonstationary":
        raw = nonstationary(rng, n, sample_rate, cfg)
    else:
        raw = stationary(kind, rng, n, sample_rate, cfg)
    return _normalise(raw, cfg.level_dbfs), used

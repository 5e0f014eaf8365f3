"""A tiny corpus the project generates itself from a seed: no download needed.

Clean "speech" is a voiced harmonic source whose pitch follows a per-speaker range and a
declining, jittered contour, shaped by three moving formants (vowel targets scaled per speaker),
cut into syllables and words with pauses between them, plus short unvoiced bursts at some
syllable onsets. It is not speech, but it has what the pipeline cares about: harmonic structure,
formant-like spectral envelopes, speaker-dependent pitch and timbre, and silences.

This module is also the project's one noise synthesiser (:func:`generate`): white, pink (1/f)
and brown (1/f²) noise, mains hum, sparse clicks, vinyl-like crackle, babble cut from speech
files, and non-stationary mixtures of these. The tiny corpus uses white, pink, hum and clicks
(:func:`synth_noise`); the demo corpus (``pipeline.demo``) generates its noise with
:func:`generate`.

Layout written under ``out_dir``::

    clean/reader_0000/synth_reader_0000_utt_00.wav   (DNS-style ``reader_NNNN`` speaker ids)
    noise/<kind>/<kind>_00.wav
    synth.json                                       (the parameters; regenerated on change)

Everything is a pure function of the parameters: the same seed writes the same samples.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.signal import lfilter

from cleancodec.core.atomic import write_json_atomic
from cleancodec.core.audio import read_mono, resample, write_audio_atomic
from cleancodec.core.config import require, require_positive_ints
from cleancodec.pipeline.mix import EPS, rms

NOISE_KINDS = ("white", "pink", "hum", "clicks")  # the tiny corpus's noise folders
GENERATED_KINDS = ("white", "pink", "brown", "hum", "crackle", "babble", "nonstationary")
STAMP_NAME = "synth.json"
STAMP_VERSION = 2  # 2: noise from the shared synthesiser (pink high-passed, hum detuned)
PCM_SUBTYPE = "PCM_16"

# Vowel formant targets (F1, F2, F3) in Hz for an adult voice; speakers scale them.
VOWELS_HZ = np.array([
    [730.0, 1090.0, 2440.0],  # a
    [530.0, 1840.0, 2480.0],  # e
    [270.0, 2290.0, 3010.0],  # i
    [570.0, 840.0, 2410.0],   # o
    [300.0, 870.0, 2240.0],   # u
])
FORMANT_BANDWIDTHS_HZ = np.array([90.0, 110.0, 170.0])
MAX_HARMONIC_HZ = 5000.0
SPEECH_RMS_DBFS = -23.0
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
SYLLABLE_S = (0.12, 0.28)
SYLLABLES_PER_WORD = (1, 3)
WORD_PAUSE_S = (0.04, 0.2)
LONG_PAUSE_S = (0.3, 0.7)
LONG_PAUSE_PROB = 0.15
UNVOICED_PROB = 0.35
UNVOICED_S = (0.03, 0.08)
EDGE_SILENCE_S = 0.1


@dataclass(frozen=True)
class SpeakerVoice:
    """Voice parameters of one synthetic speaker."""

    f0_hz: float           # median pitch
    f0_range: float        # relative pitch excursion (0.2 → ±20 %)
    formant_scale: float   # vocal-tract scaling of the formant targets
    tilt: float            # spectral tilt exponent of the harmonic amplitudes


@dataclass
class SynthConfig:
    """Parameters of the generated corpus (the ``synthetic`` part of the cache config)."""

    seed: int = 0
    speakers: int = 4
    clips_per_speaker: int = 3
    clip_seconds: float = 4.0
    noises_per_kind: int = 1
    noise_seconds: float = 5.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        require_positive_ints(self, "cache.synthetic",
                              ("speakers", "clips_per_speaker", "noises_per_kind"))


@dataclass
class TinyCorpus:
    """Where :func:`make_tiny_corpus` wrote the corpus."""

    root: Path
    clean_dir: Path
    noise_dir: Path
    clean_files: list[Path] = field(default_factory=list)
    noise_files: list[Path] = field(default_factory=list)


def speaker_voice(seed: int, speaker: int) -> SpeakerVoice:
    """Draw the voice of ``speaker``: low and high voices alternate so speakers differ clearly."""
    rng = np.random.default_rng([seed, speaker, 0])
    low_voice = speaker % 2 == 0
    f0 = rng.uniform(95.0, 140.0) if low_voice else rng.uniform(180.0, 260.0)
    scale = rng.uniform(0.92, 1.02) if low_voice else rng.uniform(1.08, 1.2)
    return SpeakerVoice(f0_hz=float(f0), f0_range=float(rng.uniform(0.12, 0.3)),
                        formant_scale=float(scale), tilt=float(rng.uniform(0.9, 1.4)))


def _segments(rng: np.random.Generator, n: int, sr: int) -> list[tuple[int, int, bool]]:
    """Syllable / pause plan ``[(start, stop, voiced)]`` covering ``n`` samples."""
    segs: list[tuple[int, int, bool]] = []
    pos = int(EDGE_SILENCE_S * sr)
    end = n - int(EDGE_SILENCE_S * sr)
    while pos < end:
        for _ in range(int(rng.integers(SYLLABLES_PER_WORD[0], SYLLABLES_PER_WORD[1] + 1))):
            length = int(rng.uniform(*SYLLABLE_S) * sr)
            if pos + length > end:
                break
            segs.append((pos, pos + length, True))
            pos += length
        pause = LONG_PAUSE_S if rng.uniform() < LONG_PAUSE_PROB else WORD_PAUSE_S
        pos += int(rng.uniform(*pause) * sr)
    return segs


def _formant_tracks(rng: np.random.Generator, segs, n: int, voice: SpeakerVoice) -> np.ndarray:
    """Per-sample formant frequencies ``[3 x n]``: one vowel target per syllable, smoothed."""
    targets = np.tile(VOWELS_HZ[int(rng.integers(len(VOWELS_HZ)))], (n, 1))
    for start, _stop, _ in segs:
        targets[start:] = VOWELS_HZ[int(rng.integers(len(VOWELS_HZ)))]
    kernel = np.hanning(max(3, n // 60))
    kernel /= kernel.sum()
    smooth = np.stack([np.convolve(targets[:, i], kernel, mode="same") for i in range(3)])
    edge = len(kernel)
    smooth[:, :edge] = smooth[:, edge:edge + 1]
    smooth[:, -edge:] = smooth[:, -edge - 1:-edge]
    return smooth * voice.formant_scale


def _pitch_track(rng: np.random.Generator, n: int, sr: int, voice: SpeakerVoice) -> np.ndarray:
    """Per-sample f0 ``[n]``: slow declination plus smoothed random excursions."""
    t = np.arange(n) / sr
    knots = max(4, int(n / sr * 4))
    excursion = rng.uniform(-1.0, 1.0, knots)
    wiggle = np.interp(t, np.linspace(0, t[-1], knots), excursion)
    declination = 1.0 - 0.15 * t / max(t[-1], 1e-9)
    return voice.f0_hz * declination * (1.0 + voice.f0_range * wiggle)


def _envelope(segs, n: int, sr: int) -> np.ndarray:
    """Raised-cosine amplitude envelope over the voiced segments, zero in pauses."""
    env = np.zeros(n)
    for start, stop, _ in segs:
        env[start:stop] = np.hanning(stop - start) ** 0.5
    return env


def synth_utterance(seed: int, speaker: int, index: int, seconds: float,
                    sample_rate: int = 16000) -> np.ndarray:
    """One speech-like utterance of ``speaker``.

    Returns
    -------
    float32 ``ndarray[T]`` with ``T = round(seconds * sample_rate)``, RMS about −23 dBFS over the
    whole clip, peak ≤ 0.9.
    """
    sr = sample_rate
    n = int(round(seconds * sr))
    voice = speaker_voice(seed, speaker)
    rng = np.random.default_rng([seed, speaker, index + 1])
    segs = _segments(rng, n, sr)
    formants = _formant_tracks(rng, segs, n, voice)
    f0 = _pitch_track(rng, n, sr, voice)
    n_harm = int(MAX_HARMONIC_HZ // voice.f0_hz * 0.8)
    k = np.arange(1, n_harm + 1)[:, None]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    freqs = k * f0[None, :]
    gain = np.zeros_like(freqs)
    for i, bw in enumerate(FORMANT_BANDWIDTHS_HZ):
        gain += 1.0 / (1.0 + ((freqs - formants[i][None, :]) / bw) ** 2)
    gain *= k ** (-voice.tilt)
    gain[freqs > sr / 2 * 0.95] = 0.0
    voiced = np.sum(gain * np.sin(k * phase[None, :]), axis=0)
    speech = voiced * _envelope(segs, n, sr)
    speech += _unvoiced_bursts(rng, segs, n, sr) * np.std(speech)
    return normalise(speech, SPEECH_RMS_DBFS)


def _unvoiced_bursts(rng: np.random.Generator, segs, n: int, sr: int) -> np.ndarray:
    """Short high-passed noise bursts just before some syllables (fricative-like)."""
    out = np.zeros(n)
    for start, _, _ in segs:
        if rng.uniform() >= UNVOICED_PROB:
            continue
        length = int(rng.uniform(*UNVOICED_S) * sr)
        begin = max(0, start - length)
        burst = np.diff(rng.standard_normal(start - begin + 1))  # first difference: high-pass
        out[begin:start] = burst * np.hanning(start - begin)
    return out


def normalise(x: np.ndarray, level_dbfs: float, peak_limit: float = PEAK_LIMIT) -> np.ndarray:
    """``x`` ``[n]`` scaled to RMS ``level_dbfs``, then down to peak ``peak_limit`` if louder.

    Returns float32 ``[n]``.
    """
    y = np.asarray(x, dtype=np.float64) * (10.0 ** (level_dbfs / 20.0) / rms(x))
    peak = float(np.max(np.abs(y)))
    if peak > peak_limit:
        y *= peak_limit / peak
    return y.astype(np.float32)


# --- noise -------------------------------------------------------------------------------------


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


def _clean_path(root: Path, speaker: int, index: int) -> Path:
    name = f"reader_{speaker:04d}"
    return root / "clean" / name / f"synth_{name}_utt_{index:02d}.wav"


def _noise_path(root: Path, kind: str, index: int) -> Path:
    return root / "noise" / kind / f"{kind}_{index:02d}.wav"


def _expected_files(root: Path, cfg: SynthConfig) -> tuple[list[Path], list[Path]]:
    clean = [_clean_path(root, s, i) for s in range(cfg.speakers)
             for i in range(cfg.clips_per_speaker)]
    noise = [_noise_path(root, k, i) for k in NOISE_KINDS for i in range(cfg.noises_per_kind)]
    return clean, noise


def _stamp(cfg: SynthConfig) -> dict:
    return {"version": STAMP_VERSION, **asdict(cfg)}


def _is_current(root: Path, cfg: SynthConfig, files: list[Path]) -> bool:
    stamp = root / STAMP_NAME
    try:
        return json.loads(stamp.read_text()) == _stamp(cfg) and all(f.is_file() for f in files)
    except (OSError, json.JSONDecodeError):
        return False


def make_tiny_corpus(out_dir: str | Path, seed: int = 0, speakers: int = 4,
                     clips_per_speaker: int = 3, clip_seconds: float = 4.0,
                     noises_per_kind: int = 1, noise_seconds: float = 5.0,
                     sample_rate: int = 16000) -> TinyCorpus:
    """Write (or reuse) the synthetic corpus under ``out_dir``.

    An existing corpus with the same parameters is reused untouched (so file times stay put and
    a cache built from it can resume); otherwise ``clean/`` and ``noise/`` are regenerated.
    Files are written atomically; ``synth.json`` is written last.

    Returns
    -------
    TinyCorpus with the clean and noise folders and their files.

    Raises
    ------
    ConfigError
        When ``speakers``, ``clips_per_speaker`` or ``noises_per_kind`` is below 1.
    """
    cfg = SynthConfig(seed=seed, speakers=speakers, clips_per_speaker=clips_per_speaker,
                      clip_seconds=clip_seconds, noises_per_kind=noises_per_kind,
                      noise_seconds=noise_seconds, sample_rate=sample_rate)
    root = Path(out_dir)
    clean, noise = _expected_files(root, cfg)
    corpus = TinyCorpus(root=root, clean_dir=root / "clean", noise_dir=root / "noise",
                        clean_files=clean, noise_files=noise)
    if _is_current(root, cfg, clean + noise):
        return corpus
    (root / STAMP_NAME).unlink(missing_ok=True)
    for sub in ("clean", "noise"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for s in range(cfg.speakers):
        for i in range(cfg.clips_per_speaker):
            audio = synth_utterance(seed, s, i, clip_seconds, sample_rate)
            write_audio_atomic(_clean_path(root, s, i), audio, sample_rate, subtype=PCM_SUBTYPE)
    for kind in NOISE_KINDS:
        for i in range(cfg.noises_per_kind):
            audio = synth_noise(kind, seed, i, noise_seconds, sample_rate)
            write_audio_atomic(_noise_path(root, kind, i), audio, sample_rate, subtype=PCM_SUBTYPE)
    write_json_atomic(root / STAMP_NAME, _stamp(cfg))
    return corpus


def make_tiny_corpus_from(cfg: SynthConfig, out_dir: str | Path) -> TinyCorpus:
    """:func:`make_tiny_corpus` with the parameters of a :class:`SynthConfig`."""
    return make_tiny_corpus(out_dir, **asdict(cfg))

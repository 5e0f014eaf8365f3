"""A tiny corpus the project generates itself from a seed: no download needed.

Clean "speech" is a voiced harmonic source whose pitch follows a per-speaker range and a
declining, jittered contour, shaped by three moving formants (vowel targets scaled per speaker),
cut into syllables and words with pauses between them, plus short unvoiced bursts at some
syllable onsets. It is not speech, but it has what the pipeline cares about: harmonic structure,
formant-like spectral envelopes, speaker-dependent pitch and timbre, and silences.

Its noise comes from the project's one noise synthesiser,
:mod:`cleancodec.datagen.noise_synth` (white, pink, hum and clicks for the tiny corpus).

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

import numpy as np

from cleancodec.core.atomic import write_json_atomic
from cleancodec.core.audio import write_audio_atomic
from cleancodec.core.config import require_positive_ints
from cleancodec.datagen.noise_synth import (
    NOISE_KINDS,
    normalise,
    synth_noise,
)

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

"""Mixing clean speech with noise the way the DNS Challenge synthesiser does (pure functions).

Conventions (DNS Challenge ``noisyspeech_synthesizer``, Reddy et al., Interspeech 2020/2021):
clean and noise are first normalised to a common RMS level, the noise is scaled so that the
clean-to-noise power ratio equals the drawn SNR, the mixture is then scaled to a target RMS
level (uniform in [level_min, level_max] dBFS) with the same gain applied to clean and noise,
and if the mixture's peak exceeds ``clip_peak`` all three are rescaled together (the SNR is
unchanged). With reverb, the clean speech is convolved with a room impulse response before
mixing; the training target stays the dry clean unless ``reverb_target`` is set.

Premixed pairs (clean / noisy files that exist already) are not mixed but levelled by the same
rule (:func:`level_premixed`): one gain for the clean window and its noisy ones, so the pair's
SNR is kept.

All signals are mono float32 ``[T]`` arrays at one sample rate. Every random choice for window
``k`` of split ``s`` comes from :func:`window_rng` ``(seed, s, k)``, so a window is reproducible
on its own, in any order, on any worker.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from cleancodec.core.config import require

EPS = 1e-12
NORMALISE_DBFS = -25.0  # common pre-mix level of clean and noise (DNS synthesiser default)
RIR_DIRECT_SEARCH_S = 0.05  # the direct path is the RIR's largest tap within its first 50 ms


@dataclass
class MixConfig:
    """Mixing parameters (the ``mix`` part of the cache config)."""

    window_seconds: float = 3.0
    snr_min_db: float = -5.0
    snr_max_db: float = 20.0
    level_min_dbfs: float = -35.0
    level_max_dbfs: float = -15.0
    reverb_prob: float = 0.0
    reverb_target: bool = False
    clip_peak: float = 0.99
    silence_threshold_db: float = -45.0
    min_active_fraction: float = 0.5
    frame_ms: float = 20.0

    def __post_init__(self) -> None:
        require(self.snr_min_db <= self.snr_max_db, "cache.mix.snr_min_db",
                f"({self.snr_min_db}) must not exceed cache.mix.snr_max_db ({self.snr_max_db})")
        require(self.window_seconds > 0, "cache.mix.window_seconds",
                f"must be > 0, got {self.window_seconds}")


@dataclass
class MixParams:
    """The random draws for one window."""

    snr_db: float
    level_dbfs: float
    reverb: bool


@dataclass
class MixResult:
    """One mixed window: ``clean`` (training target), ``noisy``, scaled ``noise``; all ``[T]``."""

    clean: np.ndarray
    noisy: np.ndarray
    noise: np.ndarray
    snr_db: float
    level_dbfs: float
    reverb: bool
    clipped: bool
    gain: float


def window_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent generator for window ``index`` of ``split`` under global ``seed``.

    The three values are hashed into a 128-bit seed, so neighbouring indices or seeds give
    unrelated streams and a window never depends on which other windows were drawn.
    """
    key = f"{int(seed)}/{split}/{int(index)}".encode()
    entropy = int.from_bytes(hashlib.sha256(key).digest()[:16], "little")
    return np.random.default_rng(entropy)


def rms(x: np.ndarray) -> float:
    """Root-mean-square of ``x``."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + EPS))


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS)."""
    return 20.0 * np.log10(rms(x))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise power ratio in dB."""
    ps = float(np.sum(np.square(signal, dtype=np.float64)))
    pn = float(np.sum(np.square(noise, dtype=np.float64)))
    return 10.0 * np.log10((ps + EPS) / (pn + EPS))


def _scale_to_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * (10.0 ** (dbfs / 20.0) / rms(x))


def frame_levels_db(x: np.ndarray, sample_rate: int, frame_ms: float) -> np.ndarray:
    """RMS level (dBFS) of consecutive non-overlapping frames of ``x``: ``[n_frames]``."""
    frame = max(1, int(round(sample_rate * frame_ms / 1000.0)))
    n = len(x) // frame
    if n == 0:
        return np.array([rms_dbfs(x)])
    frames = np.asarray(x[: n * frame], dtype=np.float64).reshape(n, frame)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + EPS)


def active_fraction(x: np.ndarray, sample_rate: int, cfg: MixConfig) -> float:
    """Fraction of frames whose level is above ``cfg.silence_threshold_db``."""
    levels = frame_levels_db(x, sample_rate, cfg.frame_ms)
    return float(np.mean(levels > cfg.silence_threshold_db))


def is_mostly_silent(x: np.ndarray, sample_rate: int, cfg: MixConfig) -> bool:
    """True when less than ``cfg.min_active_fraction`` of the window is active speech."""
    return active_fraction(x, sample_rate, cfg) < cfg.min_active_fraction


def noise_offset(noise_length: int, length: int, rng: np.random.Generator) -> int:
    """Random start of a ``length``-sample segment in a noise of ``noise_length`` samples.

    A long enough noise gives a segment inside it; a shorter one is looped, so any start works.
    """
    if noise_length <= 0:
        raise ValueError("noise is empty")
    if noise_length >= length:
        return int(rng.integers(0, noise_length - length + 1))
    return int(rng.integers(0, noise_length))


def loop_segment(noise: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``length`` samples of ``noise`` from ``offset``, wrapping around its end (float32)."""
    return np.take(noise, (offset + np.arange(length)) % len(noise)).astype(np.float32)


def fit_noise(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A ``length``-sample noise segment from a random offset.

    Noise shorter than ``length`` is concatenated with itself (looped) from a random start,
    as the DNS synthesiser does.
    """
    return loop_segment(noise, noise_offset(len(noise), length, rng), length)


def draw_mix_params(rng: np.random.Generator, cfg: MixConfig, have_rirs: bool) -> MixParams:
    """Draw SNR, target level and the reverb flag for one window (always three draws)."""
    snr = float(rng.uniform(cfg.snr_min_db, cfg.snr_max_db))
    level = float(rng.uniform(cfg.level_min_dbfs, cfg.level_max_dbfs))
    reverb_draw = float(rng.uniform())
    return MixParams(snr_db=snr, level_dbfs=level,
                     reverb=have_rirs and reverb_draw < cfg.reverb_prob)


def apply_rir(x: np.ndarray, rir: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Convolve ``x`` with a room impulse response, aligned on the direct path, same length.

    The RIR is normalised to unit energy so reverb changes colour and tail, not loudness.
    """
    rir = np.asarray(rir, dtype=np.float64)
    if rir.ndim != 1 or len(rir) == 0 or not np.any(rir):
        raise ValueError("RIR must be a non-empty, non-zero mono signal")
    rir = rir / np.sqrt(np.sum(rir**2))
    search = max(1, min(len(rir), int(RIR_DIRECT_SEARCH_S * sample_rate)))
    delay = int(np.argmax(np.abs(rir[:search])))
    wet = fftconvolve(np.asarray(x, dtype=np.float64), rir)[delay:delay + len(x)]
    return wet.astype(np.float32)


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, level_dbfs: float,
        rir: np.ndarray | None = None, cfg: MixConfig | None = None,
        sample_rate: int = 16000) -> MixResult:
    """Mix one window.

    Parameters
    ----------
    clean, noise : float32 ``[T]`` (equal length; fit the noise first with :func:`fit_noise`).
    snr_db : clean-to-noise power ratio of the mixture's components, in dB.
    level_dbfs : RMS level of the final mixture (before any clipping guard), dBFS.
    rir : optional room impulse response; reverberant speech is mixed, the target stays dry
        unless ``cfg.reverb_target``.

    Returns
    -------
    MixResult with ``noisy = speech + noise`` exactly (speech being the possibly reverberant
    clean), ``snr_db(speech, noise) == snr_db`` up to float rounding.
    """
    cfg = cfg or MixConfig()
    if len(clean) != len(noise):
        raise ValueError(f"clean ({len(clean)}) and noise ({len(noise)}) lengths differ")
    dry = _scale_to_dbfs(np.asarray(clean, dtype=np.float64), NORMALISE_DBFS)
    speech = apply_rir(dry, rir, sample_rate).astype(np.float64) if rir is not None else dry
    target = speech if (rir is not None and cfg.reverb_target) else dry
    noise = _scale_to_dbfs(np.asarray(noise, dtype=np.float64), NORMALISE_DBFS)
    noise = noise * (rms(speech) / rms(noise)) / (10.0 ** (snr_db / 20.0))
    noisy = speech + noise
    gain = 10.0 ** (level_dbfs / 20.0) / rms(noisy)
    peak = float(np.max(np.abs(noisy))) * gain
    clipped = peak > cfg.clip_peak
    if clipped:
        gain *= cfg.clip_peak / peak
    return MixResult(
        clean=(target * gain).astype(np.float32),
        noisy=(noisy * gain).astype(np.float32),
        noise=(noise * gain).astype(np.float32),
        snr_db=float(snr_db),
        level_dbfs=float(level_dbfs),
        reverb=rir is not None,
        clipped=bool(clipped),
        gain=float(gain),
    )


def mix_variants(clean: np.ndarray, noises: list[np.ndarray], snrs_db: list[float],
                 level_dbfs: float, rirs: list[np.ndarray | None], cfg: MixConfig | None = None,
                 sample_rate: int = 16000) -> list[MixResult]:
    """Mix one clean window with ``K`` noises (variant ``k``: ``noises[k]`` at ``snrs_db[k]``,
    speech through ``rirs[k]``) so that every variant shares **one** clean target.

    Variant 0 is :func:`mix` exactly (``level_dbfs`` is its mixture's level). All variants use
    variant 0's gain, so their target (the dry clean, or with ``cfg.reverb_target`` the
    reverberant one: then ``rirs`` must all be variant 0's) is the same array; when any variant
    would clip, the common gain is lowered until none does (``clipped`` set on all). A later
    variant's ``level_dbfs`` is its own mixture's level before that guard.

    Returns
    -------
    list of MixResult, one per variant, with identical ``clean``.
    """
    cfg = cfg or MixConfig()
    dry = _scale_to_dbfs(np.asarray(clean, dtype=np.float64), NORMALISE_DBFS)
    mixes = []
    for noise, snr_db, rir in zip(noises, snrs_db, rirs):
        if len(noise) != len(clean):
            raise ValueError(f"clean ({len(clean)}) and noise ({len(noise)}) lengths differ")
        speech = apply_rir(dry, rir, sample_rate).astype(np.float64) if rir is not None else dry
        n = _scale_to_dbfs(np.asarray(noise, dtype=np.float64), NORMALISE_DBFS)
        n = n * (rms(speech) / rms(n)) / (10.0 ** (snr_db / 20.0))
        mixes.append((speech, n, speech + n))
    speech0, _, noisy0 = mixes[0]
    gain = 10.0 ** (level_dbfs / 20.0) / rms(noisy0)
    levels = [level_dbfs] + [float(20 * np.log10(rms(m[2]) * gain)) for m in mixes[1:]]
    peak = max(float(np.max(np.abs(m[2]))) for m in mixes) * gain
    clipped = peak > cfg.clip_peak
    if clipped:
        gain *= cfg.clip_peak / peak
    target = speech0 if (rirs[0] is not None and cfg.reverb_target) else dry
    clean_out = (target * gain).astype(np.float32)
    return [MixResult(clean=clean_out, noisy=(noisy * gain).astype(np.float32),
                      noise=(n * gain).astype(np.float32), snr_db=float(snr), level_dbfs=level,
                      reverb=rir is not None, clipped=bool(clipped), gain=float(gain))
            for (_, n, noisy), snr, level, rir in zip(mixes, snrs_db, levels, rirs)]


def level_premixed(clean: np.ndarray, noisies: list[np.ndarray], level_dbfs: float,
                   rirs: list[np.ndarray | None], cfg: MixConfig | None = None,
                   sample_rate: int = 16000) -> list[MixResult]:
    """Level one window of a premixed pair: **one** gain for the clean window and its ``K``
    noisy variants, so each pair's SNR is kept.

    The level rule of :func:`mix_variants`, applied to mixtures that already exist: the gain
    brings variant 0's noisy window (after its reverb) to ``level_dbfs`` RMS, and when any
    output (a noisy variant or the target) would peak above ``cfg.clip_peak`` the common gain
    is lowered until none does (``clipped`` set on all). With ``rirs[k]`` the noisy variant
    ``k`` is convolved (:func:`apply_rir`, same length) and the target stays dry unless
    ``cfg.reverb_target`` (then the target goes through ``rirs[0]``, and ``rirs`` must all be
    variant 0's).

    Parameters
    ----------
    clean : float32 ``[T]``, the clean window.
    noisies : K float32 ``[T]`` noisy windows cut at the clean window's offset.
    level_dbfs : RMS level of variant 0's levelled noisy window (before the clipping guard).

    Returns
    -------
    list of MixResult, one per variant, with identical ``clean``; ``snr_db`` is the pair's SNR
    in this window, ``10 log10(Σ clean² / Σ (noisy − clean)²)`` before reverb (a gain does not
    change it); ``noise`` is ``noisy − clean`` after the gain; a later variant's
    ``level_dbfs`` is its own level before the guard.
    """
    cfg = cfg or MixConfig()
    dry = np.asarray(clean, dtype=np.float64)
    outs = []
    for noisy, rir in zip(noisies, rirs):
        if len(noisy) != len(dry):
            raise ValueError(f"clean ({len(dry)}) and noisy ({len(noisy)}) lengths differ")
        noisy = np.asarray(noisy, dtype=np.float64)
        wet = apply_rir(noisy, rir, sample_rate).astype(np.float64) if rir is not None else noisy
        outs.append((noisy - dry, wet))
    gain = 10.0 ** (level_dbfs / 20.0) / rms(outs[0][1])
    levels = [level_dbfs] + [float(20 * np.log10(rms(wet) * gain)) for _, wet in outs[1:]]
    target = (apply_rir(dry, rirs[0], sample_rate).astype(np.float64)
              if rirs[0] is not None and cfg.reverb_target else dry)
    peak = max([float(np.max(np.abs(wet))) for _, wet in outs]
               + [float(np.max(np.abs(target)))]) * gain
    clipped = peak > cfg.clip_peak
    if clipped:
        gain *= cfg.clip_peak / peak
    clean_out = (target * gain).astype(np.float32)
    return [MixResult(clean=clean_out, noisy=(wet * gain).astype(np.float32),
                      noise=(noise * gain).astype(np.float32), snr_db=snr_db(dry, noise),
                      level_dbfs=level, reverb=rir is not None, clipped=bool(clipped),
                      gain=float(gain))
            for (noise, wet), level, rir in zip(outs, levels, rirs)]

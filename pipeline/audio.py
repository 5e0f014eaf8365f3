"""Audio I/O: read any soundfile format into float32 at a target rate; atomic writes.

Every failure raises :class:`AudioError` whose message names the file and the reason, so a
caller can log it, skip the file, and go on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cleancodec.pipeline.atomic import atomic_path

SILENCE_PEAK = 1e-6  # a file whose peak stays under this is treated as all-silent


class AudioError(ValueError):
    """A file that cannot be used as audio; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality). ``x``: ``[T]`` or ``[C x T]``."""
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x.astype(np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)
    # soxr wants [T x C]
    y = soxr.resample(np.ascontiguousarray(x.T, dtype=np.float32), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


def read_audio_channels(path: str | Path, allow_silent: bool = True) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``[C x T]`` at its own rate; returns ``(audio, sample_rate)``.

    Raises AudioError for unreadable / non-audio / empty / NaN-or-inf / (optionally) silent input.
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError…)
        raise AudioError(path, f"cannot decode as audio ({type(exc).__name__}: {exc})") from exc
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError(path, "empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN or inf samples")
    if not allow_silent and float(np.max(np.abs(data))) < SILENCE_PEAK:
        raise AudioError(path, "all-silent")
    return np.ascontiguousarray(data.T), int(sr)


def read_audio(path: str | Path, sample_rate: int, allow_silent: bool = False) -> np.ndarray:
    """Read any soundfile format → mono float32 ``[T]`` at ``sample_rate`` (channels averaged)."""
    data, sr = read_audio_channels(path, allow_silent=allow_silent)
    mono = data.mean(axis=0)
    out = resample(mono, sr, sample_rate)
    if out.size == 0:
        raise AudioError(path, "too short to resample")
    return out


def write_audio_atomic(path: str | Path, audio: np.ndarray, sample_rate: int,
                       subtype: str | None = None) -> None:
    """Write ``[T]`` or ``[C x T]`` audio via a temp file in the same folder and rename it."""
    path = Path(path)
    data = audio.T if audio.ndim == 2 else audio
    fmt = _format_for(path)
    with atomic_path(path) as tmp:
        sf.write(tmp, data, sample_rate, subtype=subtype, format=fmt)


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    formats = sf.available_formats()
    if ext.upper() in formats:
        return ext.upper()
    if ext in ("oga", "opus"):
        return "OGG"
    raise AudioError(path, f"cannot write audio format '.{ext}'")

"""Audio I/O for every stage: what an audio file is, reading it, and writing it atomically.

*An audio file* is a file whose extension names a container libsndfile reads here
(:func:`audio_extensions`, from ``soundfile.available_formats()``); every stage that walks a
folder (the cache stage, the denoiser, the evaluation, the demo) lists its files with
:func:`list_audio_files` (hidden entries skipped, symlinked folders followed once).

Reading always goes through this module: whole files (:func:`read_audio_channels`,
:func:`read_audio`), a span of one (:func:`read_mono`, :func:`read_segment`), or a stream
(:func:`open_audio` then :func:`read_block`). Every failure raises :class:`AudioError` whose
message is ``"<path>: <reason>"`` with one of the reasons below, so a caller can log it, skip
the file, and go on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cleancodec.core.atomic import atomic_path

SILENCE_PEAK = 1e-6  # a file whose peak stays under this is treated as all-silent
RESAMPLE_QUALITY = "HQ"
RESAMPLE_MARGIN_S = 0.05  # context read on each side of a segment before resampling it
# soundfile container names that are not audio files one would find in a folder
NOT_AUDIO_FORMATS = frozenset({"raw", "mat4", "mat5"})
# extensions libsndfile reads under another name than its container's
EXTRA_EXTENSIONS = frozenset({"wave", "oga", "opus", "aif", "aifc", "snd", "sph", "sf"})
OGG_EXTENSIONS = frozenset({"oga", "opus"})
OGG_FORMAT = "OGG"

# the reasons an AudioError gives
EMPTY = "empty (0 samples)"
NON_FINITE = "contains NaN or inf samples"
ALL_SILENT = "all-silent"
TOO_SHORT = "too short to resample"
NO_CHANNELS = "no audio channels"


class AudioError(ValueError):
    """A file that cannot be used as audio; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def decode_error(path: str | Path, exc: BaseException) -> AudioError:
    """The AudioError for a file libsndfile could not open or decode (``exc`` is its error)."""
    return AudioError(path, f"cannot decode as audio ({type(exc).__name__}: {exc})")


# --- what an audio file is ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def audio_extensions() -> frozenset[str]:
    """File extensions (lower case, no dot) of every container libsndfile reads here."""
    names = {name.lower() for name in sf.available_formats()} - NOT_AUDIO_FORMATS
    return frozenset(names | EXTRA_EXTENSIONS)


def is_audio_path(path: str | Path) -> bool:
    """True when ``path``'s extension names a container libsndfile reads."""
    return Path(path).suffix.lower().lstrip(".") in audio_extensions()


def is_hidden(name: str) -> bool:
    """True for a file or folder name that starts with a dot (``.state``, ``._x.wav``)."""
    return name.startswith(".")


def list_audio_files(root: str | Path) -> list[Path]:
    """Every audio file under the folder ``root``: the one folder walk of the project.

    Recursive; hidden files and folders (:func:`is_hidden`) are skipped; symlinked folders are
    followed, each real folder is read once (a symlink cycle ends there); a symlink named like
    an audio file is listed even when it dangles, so that reading it reports the problem.
    Returns ``root / relative path`` for each file, sorted by the relative POSIX path.

    Raises FileNotFoundError when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # reached again through a symlink (a cycle, or two links to it)
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))  # a repeatable walk
        found.extend(Path(dirpath) / name for name in filenames
                     if not is_hidden(name) and is_audio_path(name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: ``frames`` per channel, rate, channels, container, subtype."""

    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str


def audio_info(path: str | Path) -> AudioInfo:
    """The header of ``path``; raises AudioError when libsndfile cannot open it."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError…)
        raise decode_error(path, exc) from exc
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels), info.format,
                     info.subtype)


def open_audio(path: str | Path) -> sf.SoundFile:
    """Open ``path`` for streamed reading (:func:`read_block`); raises AudioError."""
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError…)
        raise decode_error(path, exc) from exc
    if handle.channels < 1:
        handle.close()
        raise AudioError(path, NO_CHANNELS)
    return handle


def check_finite(path: str | Path, data: np.ndarray) -> np.ndarray:
    """``data`` unchanged; raises AudioError when it holds NaN or inf samples."""
    if not np.all(np.isfinite(data)):
        raise AudioError(path, NON_FINITE)
    return data


def read_block(handle: sf.SoundFile, path: str | Path, frames: int) -> np.ndarray:
    """The next ``frames`` samples of an open file as float32 ``[C x n]`` (``n = 0`` at its end).

    Raises AudioError for a decoding error or NaN / inf samples.
    """
    try:
        block = handle.read(frames, dtype="float32", always_2d=True)
    except Exception as exc:  # a corrupt stream fails part-way through
        raise decode_error(path, exc) from exc
    return np.ascontiguousarray(check_finite(path, block).T)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality). ``x``: ``[T]`` or ``[C x T]``."""
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        y = soxr.resample(x.astype(np.float32), sr_in, sr_out, quality=RESAMPLE_QUALITY)
        return y.astype(np.float32)
    # soxr wants [T x C]
    y = soxr.resample(np.ascontiguousarray(x.T, dtype=np.float32), sr_in, sr_out,
                      quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(y.T, dtype=np.float32)


def read_audio_channels(path: str | Path, allow_silent: bool = True) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``[C x T]`` at its own rate; returns ``(audio, sample_rate)``.

    Raises AudioError for unreadable / non-audio / empty / NaN-or-inf / (optionally) silent input.
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError…)
        raise decode_error(path, exc) from exc
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError(path, EMPTY)
    check_finite(path, data)
    if not allow_silent and float(np.max(np.abs(data))) < SILENCE_PEAK:
        raise AudioError(path, ALL_SILENT)
    return np.ascontiguousarray(data.T), int(sr)


def read_audio(path: str | Path, sample_rate: int, allow_silent: bool = False) -> np.ndarray:
    """Read any soundfile format → mono float32 ``[T]`` at ``sample_rate`` (channels averaged)."""
    data, sr = read_audio_channels(path, allow_silent=allow_silent)
    mono = data.mean(axis=0)
    out = resample(mono, sr, sample_rate)
    if out.size == 0:
        raise AudioError(path, TOO_SHORT)
    return out


def read_mono(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Samples ``start:stop`` of ``path`` at its own rate, channels averaged.

    Returns ``(float32 [T], sample_rate)``; ``T`` is shorter than ``stop - start`` past the
    file's end. Raises AudioError when the file cannot be decoded.
    """
    try:
        data, sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError…)
        raise decode_error(path, exc) from exc
    return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(sr)


def read_segment(path: str | Path, start: int, length: int, sample_rate: int) -> np.ndarray:
    """Mono float32 ``[length]`` of ``path`` from sample ``start`` at ``sample_rate``.

    Reads only the needed part (plus a short resampling margin, aligned so the result is
    deterministic); zero-pads past the end of the file. Raises AudioError on read failure.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
        sr = info.samplerate
        if sr == sample_rate:
            data, _ = sf.read(str(path), start=start, frames=length, dtype="float32",
                              always_2d=True)
            mono = data.mean(axis=1)
            offset = 0
        else:
            g = np.gcd(sr, sample_rate)
            step_in, step_out = sr // g, sample_rate // g
            margin = int(RESAMPLE_MARGIN_S * sample_rate)
            block = max(0, start - margin) // step_out
            first_in, first_out = block * step_in, block * step_out
            stop_in = -(-(start + length + margin) * sr // sample_rate)
            data, _ = sf.read(str(path), start=first_in, stop=min(stop_in, info.frames),
                              dtype="float32", always_2d=True)
            mono = resample(data.mean(axis=1), sr, sample_rate)
            offset = start - first_out
    except Exception as exc:
        raise AudioError(path, f"cannot read segment ({type(exc).__name__}: {exc})") from exc
    seg = mono[offset:offset + length]
    if len(seg) < length:
        seg = np.pad(seg, (0, length - len(seg)))
    return np.ascontiguousarray(seg, dtype=np.float32)


# --- writing -----------------------------------------------------------------------------------


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
    if ext in OGG_EXTENSIONS:
        return OGG_FORMAT
    raise AudioError(path, f"cannot write audio format '.{ext}'")


__all__ = [
    "ALL_SILENT", "EMPTY", "NON_FINITE", "NO_CHANNELS", "SILENCE_PEAK", "TOO_SHORT", "AudioError",
    "AudioInfo", "audio_extensions", "audio_info", "check_finite", "decode_error",
    "is_audio_path", "is_hidden", "list_audio_files", "open_audio", "read_audio",
    "read_audio_channels", "read_block", "read_mono", "read_segment", "resample",
    "write_audio_atomic",
]

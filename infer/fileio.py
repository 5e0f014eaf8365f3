"""Streaming file I/O of ``denoise``: which files go where, reading blocks, writing outputs.

- :func:`plan_tasks` maps every audio file under INPUT (``core.audio.list_audio_files``) to
  its output path, mirroring the folder tree, and refuses outputs that would overwrite inputs.
- :class:`AudioReader` reads a file block by block (``pipeline.audio``: one reader, one set
  of error messages).
- :class:`AudioWriter` writes an output progressively into a temporary file beside it
  (``pipeline.atomic``) that is renamed over the output only when complete, in the input's
  container format and sample format.
- :class:`Resampler` and :class:`Fifo` carry ``[C x n]`` sample streams between them.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cleancodec.core.atomic import publish, temp_beside
from cleancodec.core.audio import (
    RESAMPLE_QUALITY,
    AudioError,
    audio_extensions,
    audio_info,
    list_audio_files,
    open_audio,
    read_block,
)

log = logging.getLogger(__name__)

PCM_CLIP = 1.0  # integer sample formats cannot hold |x| > 1
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # subtypes that hold any float value
DENOISED_SUFFIX = "_denoised"


class RunError(ValueError):
    """The run cannot start (bad INPUT / OUTPUT)."""


# --- planning: which files go where -----------------------------------------------------------


@dataclass
class FileTask:
    """One input file and the output path it is denoised into."""

    input: Path
    output: Path


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def plan_tasks(input_path: str | Path, output_path: str | Path) -> list[FileTask]:
    """Map every audio file under ``input_path`` to its output path (mirrored tree).

    A file INPUT maps to OUTPUT itself, or to ``OUTPUT/<name>`` when OUTPUT is a folder.
    Raises RunError when INPUT is missing, holds no audio, or OUTPUT equals / lies inside it.
    """
    src = Path(input_path).expanduser().resolve()
    dst = Path(output_path).expanduser().resolve()
    if not src.exists():
        raise RunError(f"{input_path}: no such file or folder")
    if src.is_file():
        target = dst / src.name if dst.is_dir() else dst
        if target == src:
            raise RunError(f"{output_path}: output would overwrite the input file")
        return [FileTask(src, target)]
    if dst == src or _is_within(dst, src):
        raise RunError(f"{output_path}: output folder must not be the input folder or lie "
                       f"inside it ({input_path})")
    files = list_audio_files(src)
    if not files:
        raise RunError(f"{input_path}: no audio files found (extensions: "
                       f"{', '.join(sorted(audio_extensions()))})")
    tasks = [FileTask(p, dst / p.relative_to(src)) for p in files]
    inputs = set(files)
    for task in tasks:
        if task.output in inputs:
            raise RunError(f"{task.output}: output would overwrite an input file")
    return tasks


def default_output(input_path: str | Path) -> Path:
    """``<INPUT>_denoised`` beside the input (``name_denoised.ext`` for a file)."""
    src = Path(input_path).expanduser()
    src = Path(os.path.normpath(src.absolute()))
    if src.is_file():
        return src.with_name(f"{src.stem}{DENOISED_SUFFIX}{src.suffix}")
    return src.with_name(f"{src.name}{DENOISED_SUFFIX}")


def total_seconds(tasks: list[FileTask]) -> float:
    """Seconds of audio the tasks' inputs hold, by their headers (unreadable ones count 0)."""
    total = 0.0
    for task in tasks:
        try:
            info = audio_info(task.input)
        except AudioError:  # reported when the file is processed
            continue
        total += info.frames / info.sample_rate
    return total


# --- sample streams ---------------------------------------------------------------------------


class Resampler:
    """Streaming ``[C x n]`` resampler (soxr), or a pass-through when the rates are equal."""

    def __init__(self, sr_in: int, sr_out: int, channels: int):
        self.stream = None if sr_in == sr_out else soxr.ResampleStream(
            sr_in, sr_out, channels, dtype="float32", quality=RESAMPLE_QUALITY)
        self.channels = channels

    def push(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next ``[C x n]`` samples; returns ``[C x m]`` (``last``: flush too)."""
        if self.stream is None:
            return x
        y = self.stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(y.reshape(-1, self.channels).T)

    def flush(self) -> np.ndarray:
        """The ``[C x m]`` samples still inside the resampler at the end of the stream."""
        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


class Fifo:
    """A FIFO of ``[C x n]`` samples."""

    def __init__(self, channels: int):
        self.channels = channels
        self.parts: deque[np.ndarray] = deque()
        self.size = 0

    def put(self, x: np.ndarray) -> None:
        """Append ``[C x n]`` samples."""
        if x.shape[1]:
            self.parts.append(x)
            self.size += x.shape[1]

    def take(self, n: int) -> np.ndarray:
        """Remove and return the first ``min(n, size)`` samples as ``[C x n']``."""
        out, need = [], n
        while need and self.parts:
            head = self.parts.popleft()
            out.append(head[:, :need])
            if head.shape[1] > need:
                self.parts.appendleft(head[:, need:])
            need -= out[-1].shape[1]
        self.size -= n - need
        return np.concatenate(out, axis=1) if out else np.zeros((self.channels, 0), np.float32)


# --- files ------------------------------------------------------------------------------------


class AudioReader:
    """An input file read block by block: float32 ``[C x n]`` blocks at its own rate.

    Raises AudioError (naming the file) when it cannot be opened or decoded, or holds NaN / inf.
    """

    def __init__(self, path: Path):
        self.path = path
        self.handle = open_audio(path)
        self.channels = self.handle.channels
        self.sample_rate = self.handle.samplerate
        self.format, self.subtype = self.handle.format, self.handle.subtype
        self.frames_read = 0

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        """Yield ``[C x n]`` blocks of up to ``frames`` samples until the end of the file."""
        while True:
            block = read_block(self.handle, self.path, frames)
            if not block.shape[1]:
                return
            self.frames_read += block.shape[1]
            yield block

    def close(self) -> None:
        self.handle.close()


class AudioWriter:
    """An output written progressively into a temp file beside it, published on :meth:`commit`.

    Same container and sample format as the input; integer formats are clipped to ±1. A
    ``comment`` is stored in the file's comment tag where the container has one.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, format: str, subtype: str,
                 comment: str = ""):
        self.path, self.subtype = path, subtype
        if not sf.check_format(format, subtype):
            raise AudioError(path, f"cannot write {format}/{subtype}")
        self.tmp: Path | None = temp_beside(path)
        try:
            self.handle = sf.SoundFile(str(self.tmp), "w", samplerate=sample_rate,
                                       channels=channels, format=format, subtype=subtype)
        except Exception as exc:  # libsndfile refuses some rate / format combinations
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
            raise AudioError(path, f"cannot write {format}/{subtype} at {sample_rate} Hz "
                                   f"({type(exc).__name__}: {exc})") from exc
        self.written = 0
        if comment:
            try:
                self.handle.comment = comment
            except Exception:  # not every container has a comment tag
                log.debug("%s: container has no comment tag", path)

    def write(self, y: np.ndarray) -> None:
        """Append ``[C x n]`` samples."""
        if not y.shape[1]:
            return
        if not any(kind in self.subtype for kind in FLOAT_SUBTYPES):
            y = np.clip(y, -PCM_CLIP, PCM_CLIP)
        self.handle.write(np.ascontiguousarray(y.T))
        self.written += y.shape[1]

    def commit(self) -> None:
        """Close the temp file and rename it over the output."""
        self.handle.close()
        publish(self.tmp, self.path)
        self.tmp = None

    def abort(self) -> None:
        """Close and delete the temp file (failure or interruption); never raises."""
        try:
            self.handle.close()
        except Exception:  # closing a broken handle must not hide the first error
            pass
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


__all__ = ["AudioReader", "AudioWriter", "FileTask", "Fifo", "Resampler", "RunError",
           "default_output", "plan_tasks", "total_seconds"]

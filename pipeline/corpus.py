"""Corpus input: find clean / noise / RIR files, check them, split clean speech by speaker.

Folders are read with the project's one walker, ``core.audio.list_audio_files`` (recursive,
symlinked folders followed, hidden entries skipped) and files are taken by extension (every
format libsndfile reads); anything else is ignored. DNS Challenge layouts work
as they come: their clean file names carry the reader id (``..._reader_06709_...``).

Speaker ids, in the order ``speaker_source: auto`` tries them:

1. an ``index.csv`` in the folder or its parent (the demo corpus; format in
   ``core.corpus_index``): columns ``path`` (relative to the csv's folder, or absolute),
   ``speaker`` and ``split`` (``train`` / ``val`` / ``test``; ``test`` rows are held out of the
   cache entirely);
2. the first of ``speaker_patterns`` (regular expressions, group 1 = id) matching the file name:
   DNS ``reader_NNNN``, LibriSpeech ``SPK-CHAPTER-UTT``, VCTK ``pNNN_``;
3. none: the file is its own group.

``speaker_source: dir`` uses the first folder level below the root instead (``clean/<spk>/…``).
The val split takes whole groups (speakers), chosen by a seeded hash: deterministic and
speaker-disjoint.

Checking (:func:`scan_audio`) reads each file once, block by block, and rejects corrupt,
truncated, empty, NaN/inf, all-silent, non-audio and unreadable files with a reason.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from cleancodec.core.audio import SILENCE_PEAK, list_audio_files
from cleancodec.core.corpus_index import INDEX_NAME, IndexFileError, IndexRow, read_index

DEFAULT_SPEAKER_PATTERNS = (r"reader_(\d+)", r"^(\d+)-\d+-\d+", r"^(p\d{3})_")
SPEAKER_SOURCES = ("auto", "index", "pattern", "dir", "none")
SPLITS = ("train", "val")
HELD_OUT_SPLIT = "test"
SCAN_BLOCK = 1 << 16
_DATA_CHUNK_LOG = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_CHUNK_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


class CorpusError(ValueError):
    """A corpus folder is missing or holds no usable audio."""


@dataclass
class AudioFile:
    """One discovered file.

    ``rel`` is its path relative to the folder it was found in (POSIX separators); ``speaker``
    and ``split`` come from an index or the file name (``None`` when unknown).
    """

    role: str
    path: Path
    rel: str
    size: int
    mtime_ns: int
    speaker: str | None = None
    split: str | None = None


@dataclass
class ScanResult:
    """Outcome of checking one file: ``length`` in samples at the target rate and its
    ``channels``, or a reason."""

    length: int = 0
    reason: str | None = None
    channels: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class SplitFiles:
    """Files of one role per split, plus those held out (index ``test`` rows)."""

    train: list[AudioFile] = field(default_factory=list)
    val: list[AudioFile] = field(default_factory=list)
    held_out: list[AudioFile] = field(default_factory=list)

    def of(self, split: str) -> list[AudioFile]:
        return getattr(self, split)


# --- discovery -------------------------------------------------------------------------------


def find_audio_files(root: str | Path, role: str) -> list[AudioFile]:
    """All audio files under ``root`` (``core.audio.list_audio_files``), sorted by relative
    path. A dangling symlink is kept (size and mtime -1) so that the scan reports it.

    Raises CorpusError when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: {role} folder not found")
    found: list[AudioFile] = []
    for path in list_audio_files(root):
        try:
            st = path.stat()
        except OSError:  # dangling symlink: keep it so the scan reports it
            st = None
        found.append(AudioFile(role=role, path=path.absolute(),
                               rel=path.relative_to(root).as_posix(),
                               size=st.st_size if st else -1,
                               mtime_ns=st.st_mtime_ns if st else -1))
    return found


def listing(files: list[AudioFile]) -> list[tuple[str, str, int, int]]:
    """``(role, relative path, size, mtime)`` of each file, sorted: what the corpus fingerprint
    (``core.hashing.fingerprint(listing(files))``) hashes, so it changes when the corpus does."""
    return sorted((f.role, f.rel, f.size, f.mtime_ns) for f in files)


# --- speakers and splits ---------------------------------------------------------------------


def find_index(root: str | Path, name: str = INDEX_NAME) -> Path | None:
    """The ``index.csv`` in ``root`` or its parent, if any."""
    root = Path(root)
    for folder in (root, root.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def read_speakers(path: str | Path) -> dict[str, IndexRow]:
    """``index.csv`` → ``{resolved absolute path of the file: its row}``.

    Raises CorpusError when the index cannot be read (see ``core.corpus_index.read_index``).
    """
    try:
        rows = read_index(path)
    except IndexFileError as exc:
        raise CorpusError(str(exc)) from exc
    return {os.path.realpath(row.file(path)): row for row in rows}


def speaker_from_name(rel: str, patterns: tuple[str, ...] | list[str]) -> str | None:
    """Speaker id from the file name by the first matching pattern (group 1), else None."""
    name = Path(rel).name
    for pattern in patterns:
        match = re.search(pattern, name)
        if match:
            return match.group(1)
    return None


def annotate_speakers(files: list[AudioFile], root: str | Path, source: str = "auto",
                      patterns: tuple[str, ...] | list[str] = DEFAULT_SPEAKER_PATTERNS,
                      index_name: str = INDEX_NAME) -> None:
    """Fill ``speaker`` (and ``split`` from an index) of ``files`` in place; see module doc."""
    if source not in SPEAKER_SOURCES:
        raise CorpusError(f"speaker_source must be one of {SPEAKER_SOURCES}, got {source!r}")
    index_path = find_index(root, index_name) if source in ("auto", "index") else None
    if source == "index" and index_path is None:
        raise CorpusError(f"{root}: speaker_source is 'index' but no {index_name} was found")
    index = read_speakers(index_path) if index_path else {}
    for f in files:
        row = index.get(os.path.realpath(f.path))
        if row is not None:
            f.speaker, f.split = row.speaker or None, row.split or None
        if f.speaker is None and source in ("auto", "pattern"):
            f.speaker = speaker_from_name(f.rel, patterns)
        if source == "dir" and "/" in f.rel:
            f.speaker = f.rel.split("/", 1)[0]


def group_key(f: AudioFile) -> str:
    """The unit a split keeps together: the speaker, or the file itself when unknown."""
    return f"speaker:{f.speaker}" if f.speaker is not None else f"file:{f.rel}"


def choose_val_groups(groups: list[str], val_fraction: float, seed: int) -> set[str]:
    """Pick ``round(val_fraction * n)`` groups (at least one, never all) by a seeded hash.

    Returns an empty set when ``val_fraction <= 0`` or there are fewer than two groups.
    """
    unique = sorted(set(groups))
    if val_fraction <= 0 or len(unique) < 2:
        return set()
    order = sorted(unique, key=lambda g: hashlib.sha256(f"{seed}/{g}".encode()).hexdigest())
    count = min(len(unique) - 1, max(1, int(round(val_fraction * len(unique)))))
    return set(order[:count])


def split_files(files: list[AudioFile], val_fraction: float, seed: int) -> SplitFiles:
    """Deterministic train/val split by group; index ``split`` values win where present.

    Files whose index split is ``test`` are held out. Groups are speakers where known, so the
    computed split is speaker-disjoint.
    """
    out = SplitFiles()
    free = [f for f in files if f.split not in (*SPLITS, HELD_OUT_SPLIT)]
    val_groups = choose_val_groups([group_key(f) for f in free], val_fraction, seed)
    for f in files:
        if f.split == HELD_OUT_SPLIT:
            out.held_out.append(f)
        elif f.split in SPLITS:
            out.of(f.split).append(f)
        else:
            (out.val if group_key(f) in val_groups else out.train).append(f)
    return out


# --- checking and reading --------------------------------------------------------------------


def resampled_length(frames: int, sr_in: int, sr_out: int) -> int:
    """Samples at ``sr_out`` that ``frames`` samples at ``sr_in`` cover (floor)."""
    return int(frames) * int(sr_out) // int(sr_in)


def scan_audio(path: str | Path, sample_rate: int) -> ScanResult:
    """Read ``path`` once, block by block, and check it is usable audio.

    Returns ScanResult with the length at ``sample_rate``, or with ``reason`` set for
    unreadable, non-audio, corrupt or truncated, empty, NaN/inf or all-silent files.
    """
    path = Path(path)
    if not os.access(path, os.R_OK):
        return ScanResult(reason="unreadable (permission denied or dangling link)")
    try:
        info = sf.info(str(path))
        frames, peak = 0, 0.0
        for block in sf.blocks(str(path), blocksize=SCAN_BLOCK, dtype="float32", always_2d=True):
            if not np.all(np.isfinite(block)):
                return ScanResult(reason="contains NaN or inf samples")
            frames += len(block)
            if len(block):
                peak = max(peak, float(np.max(np.abs(block))))
    except Exception as exc:  # libsndfile raises several types for corrupt/non-audio input
        detail = str(exc).replace(f"Error opening {str(path)!r}: ", "")
        return ScanResult(reason=f"cannot decode as audio ({type(exc).__name__}: {detail})")
    if frames == 0:
        return ScanResult(reason="empty (0 samples)")
    cut = _declared_vs_actual_bytes(info.extra_info)
    if cut:
        return ScanResult(reason=f"truncated (header declares {cut[0]} data bytes, "
                                 f"file holds {cut[1]})")
    if 0 < info.frames != frames:
        return ScanResult(reason=f"truncated (header declares {info.frames} samples, "
                                 f"decoded {frames})")
    if peak < SILENCE_PEAK:
        return ScanResult(reason="all-silent")
    length = resampled_length(frames, info.samplerate, sample_rate)
    if length == 0:
        return ScanResult(reason="too short to resample")
    return ScanResult(length=length, channels=int(info.channels))


def _declared_vs_actual_bytes(extra_info: str) -> tuple[int, int] | None:
    """``(declared, present)`` data bytes when libsndfile's header log shows a cut data chunk.

    libsndfile reads a truncated WAV/AIFF without error and notes ``data : N (should be M)``;
    sizes 0 and 0xFFFFFFFF mean "unknown length" (streamed writers), not truncation.
    """
    match = _DATA_CHUNK_LOG.search(extra_info or "")
    if not match:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared in _UNKNOWN_CHUNK_SIZES or present >= declared:
        return None
    return declared, present


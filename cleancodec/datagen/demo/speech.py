"""One voice's prompts (short studio recordings) → clean speech session files.

Telephony prompt packages hold hundreds of short recordings (a word, a digit, a sentence),
each padded with silence. Each prompt is decoded, its leading and trailing silence is trimmed,
and the prompts are shuffled (seeded) and joined with short pauses into sessions of about
``sessions.seconds``, so every training window and every 10 s test clip is full of speech, as
in the DNS corpus. A prompt that cannot be decoded or is empty is skipped and listed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleancodec.core.audio import AudioError, write_audio_atomic
from cleancodec.core.corpus_index import IndexRow
from cleancodec.datagen.demo.config import SessionConfig, SpeechSource
from cleancodec.datagen.demo.g722_codec import read_prompt
from cleancodec.datagen.demo.index import Skipped
from cleancodec.pipeline.mix import frame_levels_db, window_rng

CLEAN_DIR = "clean"
PCM_SUBTYPE = "PCM_16"
PEAK_LIMIT = 0.99  # sessions whose peak exceeds this are scaled down before the 16-bit write


@dataclass
class Prompt:
    """One trimmed prompt: mono float32 ``[T]`` at the corpus rate."""

    name: str  # path inside the package, relative to the prompts' common folder
    audio: np.ndarray
    source_sample_rate: int


def list_files(root: Path, pattern: str, exclude: list[str]) -> list[Path]:
    """Files under ``root`` matching glob ``pattern`` minus those matching any ``exclude``."""
    chosen = {p for p in root.glob(pattern) if p.is_file()}
    for ex in exclude:
        chosen -= set(root.glob(ex))
    return sorted(chosen)


def trim_silence(x: np.ndarray, sample_rate: int, cfg: SessionConfig) -> np.ndarray:
    """Cut leading/trailing frames under ``cfg.trim_threshold_db``; keep ``trim_pad_ms`` each side.

    Returns an empty array when no frame is above the threshold.
    """
    frame = max(1, int(round(sample_rate * cfg.trim_frame_ms / 1000.0)))
    levels = frame_levels_db(x, sample_rate, cfg.trim_frame_ms)
    active = np.flatnonzero(levels > cfg.trim_threshold_db)
    if len(x) < frame or active.size == 0:
        return np.zeros(0, dtype=np.float32)
    pad = int(round(sample_rate * cfg.trim_pad_ms / 1000.0))
    start = max(0, active[0] * frame - pad)
    stop = min(len(x), (active[-1] + 1) * frame + pad)
    return np.ascontiguousarray(x[start:stop], dtype=np.float32)


def load_prompts(files: list[Path], base: Path, unit: str, sample_rate: int,
                 cfg: SessionConfig) -> tuple[list[Prompt], list[Skipped]]:
    """Decode and trim ``files``; unreadable, empty or silent ones are returned as Skipped."""
    prompts, skipped = [], []
    min_len = int(cfg.min_prompt_seconds * sample_rate)
    for path in tqdm(files, desc=f"{unit}: decode", unit="file", leave=False):
        name = os.path.relpath(path, base)
        try:
            audio, src_sr = read_prompt(path, sample_rate)
        except AudioError as exc:
            skipped.append(Skipped(unit, name, exc.reason))
            continue
        trimmed = trim_silence(audio, sample_rate, cfg)
        if len(trimmed) < min_len:
            reason = "silent" if len(audio) else "empty (0 samples)"
            skipped.append(Skipped(unit, name, f"{reason} (under {cfg.min_prompt_seconds} s "
                                               f"of sound after trimming)"))
            continue
        prompts.append(Prompt(name, trimmed, src_sr))
    return prompts, skipped


def plan_sessions(lengths: list[int], sample_rate: int, cfg: SessionConfig,
                  rng: np.random.Generator, max_samples: int | None) -> list[list[int]]:
    """Group prompt indices into sessions of about ``cfg.seconds`` (prompt order shuffled).

    A session is closed when the next prompt plus an average pause would overshoot the target
    (a single prompt longer than the target makes a session of its own). Stops adding prompts
    once ``max_samples`` of speech (pauses not counted) are planned; None: no cap.
    """
    order = rng.permutation(len(lengths))
    target = int(cfg.seconds * sample_rate)
    mean_gap = int(0.5 * (cfg.gap_min_seconds + cfg.gap_max_seconds) * sample_rate)
    sessions: list[list[int]] = []
    current: list[int] = []
    filled = total = 0
    for idx in order:
        if max_samples is not None and total >= max_samples:
            break
        if current and filled + mean_gap + lengths[idx] > target:
            sessions.append(current)
            current, filled = [], 0
        filled += lengths[idx] + (mean_gap if current else 0)
        current.append(int(idx))
        total += lengths[idx]
    if current:
        sessions.append(current)
    return sessions


def render_session(parts: list[np.ndarray], sample_rate: int, cfg: SessionConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """Join prompts with random pauses (uniform in the gap range) → float32 ``[T]``."""
    pieces: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i:
            gap = rng.uniform(cfg.gap_min_seconds, cfg.gap_max_seconds)
            pieces.append(np.zeros(int(gap * sample_rate), dtype=np.float32))
        pieces.append(part)
    audio = np.concatenate(pieces).astype(np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > PEAK_LIMIT:
        audio *= PEAK_LIMIT / peak
    return audio


def language_tag(language: str) -> str:
    return language.lower().replace("_", "-")


def write_sessions(src: SpeechSource, prompts: list[Prompt], out_root: Path, split: str,
                   version: str, seed: int, sample_rate: int,
                   cfg: SessionConfig) -> list[IndexRow]:
    """Plan, render and write the sessions of one source; returns their index rows."""
    rng = window_rng(seed, f"speech/{src.package}", 0)
    cap = None if src.max_minutes is None else int(src.max_minutes * 60 * sample_rate)
    sessions = plan_sessions([len(p.audio) for p in prompts], sample_rate, cfg, rng, cap)
    rows = []
    for i, members in enumerate(tqdm(sessions, desc=f"{src.package}: write", unit="file",
                                     leave=False)):
        audio = render_session([prompts[j].audio for j in members], sample_rate, cfg, rng)
        rel = f"{CLEAN_DIR}/{src.speaker}/{src.speaker}_{language_tag(src.language)}_{i:03d}.wav"
        write_audio_atomic(out_root / rel, audio, sample_rate, subtype=PCM_SUBTYPE)
        rows.append(IndexRow(
            path=rel, role="clean", split=split, kind="speech", speaker=src.speaker,
            language=src.language, duration_s=len(audio) / sample_rate, source_package=src.package,
            source_version=version, license=src.license, synthetic=src.synthetic,
            source_sample_rate=min(prompts[j].source_sample_rate for j in members),
            origin=" ".join(prompts[j].name for j in members)))
    return rows


def common_base(files: list[Path], root: Path) -> Path:
    """The deepest folder holding all ``files`` (names in the index are relative to it)."""
    if not files:
        return root
    return Path(os.path.commonpath([str(f.parent) for f in files]))

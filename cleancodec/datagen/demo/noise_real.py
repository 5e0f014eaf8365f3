"""Noise recordings from a Debian package → ``noise/<kind>/*.wav``.

Files are sorted into kinds by name (config patterns). Long recordings are capped and cut into
segments of about ``real_noise.segment_seconds``; short sounds (drum hits, clicks, a door) are
pooled per kind and split into seeded *event sequences*: sounds at random onsets and gains over
silence, a non-stationary noise like the transient classes of the DNS noise set. Licenses come
per file from the package's machine-readable ``copyright`` file where it names the file.
"""
from __future__ import annotations

import fnmatch
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleancodec.core.audio import AudioError, write_audio_atomic
from cleancodec.core.corpus_index import IndexRow
from cleancodec.datagen.demo.config import NoisePackage, RealNoiseConfig
from cleancodec.datagen.demo.g722_codec import read_prompt
from cleancodec.datagen.demo.index import Skipped
from cleancodec.datagen.demo.splits import hold_out
from cleancodec.pipeline.mix import window_rng

NOISE_DIR = "noise"
PCM_SUBTYPE = "PCM_16"
PEAK_LIMIT = 0.99
SILENT_PEAK = 1e-4  # a recording whose peak stays under this carries no usable noise


@dataclass
class NoiseFile:
    """One decoded noise recording, mono float32 ``[T]`` at the corpus rate."""

    name: str  # file name inside the package
    stem: str
    kind: str
    audio: np.ndarray
    license: str


def copyright_licenses(text: str) -> dict[str, str]:
    """``file name -> license`` from a DEP-5 ``copyright`` file (stanzas naming files exactly).

    Wildcard stanzas are ignored; callers fall back to the package-wide license.
    """
    out: dict[str, str] = {}
    for stanza in re.split(r"\n\s*\n", text):
        files, license_ = _stanza_fields(stanza)
        for f in files:
            if license_ and not any(c in f for c in "*?["):
                out[Path(f).name] = license_
    return out


def _stanza_fields(stanza: str) -> tuple[list[str], str]:
    files: list[str] = []
    license_ = ""
    field = ""
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t"):
            if field == "files":
                files.extend(line.split())
            continue
        key, _, value = line.partition(":")
        field = key.strip().lower()
        if field == "files":
            files.extend(value.split())
        elif field == "license" and not license_:
            license_ = value.strip()
    return files, license_


def kind_of(stem: str, kinds: dict[str, list[str]]) -> str | None:
    """The first kind with a pattern matching ``stem`` (None: not used as noise)."""
    for kind, patterns in kinds.items():
        if any(fnmatch.fnmatchcase(stem, p) for p in patterns):
            return kind
    return None


def safe_stem(stem: str) -> str:
    """A file-name part without ``_`` (test-set names use ``_`` as the field separator)."""
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "noise"


def load_noise_files(files: list[Path], pkg: NoisePackage, licenses: dict[str, str], unit: str,
                     sample_rate: int) -> tuple[list[NoiseFile], list[Skipped]]:
    """Decode the package's noise files that match a kind; bad ones are Skipped."""
    out, skipped = [], []
    for path in tqdm(files, desc=f"{unit}: decode", unit="file", leave=False):
        kind = kind_of(path.stem, pkg.kinds)
        if kind is None:
            continue
        try:
            audio, _ = read_prompt(path, sample_rate)
        except AudioError as exc:
            skipped.append(Skipped(unit, path.name, exc.reason))
            continue
        if audio.size == 0 or float(np.max(np.abs(audio))) < SILENT_PEAK:
            skipped.append(Skipped(unit, path.name, "silent or empty"))
            continue
        if pkg.max_seconds_per_file is not None:
            audio = audio[: int(pkg.max_seconds_per_file * sample_rate)]
        out.append(NoiseFile(path.name, path.stem, kind, audio,
                             licenses.get(path.name, pkg.license)))
    return out, skipped


def segment(audio: np.ndarray, segment_samples: int) -> list[np.ndarray]:
    """Cut ``audio`` into ``ceil(T / segment_samples)`` equal parts (each at most that long)."""
    n = max(1, math.ceil(len(audio) / segment_samples))
    bounds = np.linspace(0, len(audio), n + 1).astype(int)
    return [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def event_sequence(sounds: list[np.ndarray], length: int, sample_rate: int,
                   cfg: RealNoiseConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Short sounds at random onsets and gains → float32 ``[length]`` and the sounds used.

    Onsets follow intervals uniform in ``[0.5, 1.5] / rate`` (rate drawn per sequence), so no
    gap is longer than ``1.5 / event_rate_min_hz`` seconds.
    """
    out = np.zeros(length, dtype=np.float64)
    rate = rng.uniform(cfg.event_rate_min_hz, cfg.event_rate_max_hz)
    used: list[int] = []
    t = rng.uniform(0.0, 1.0 / rate)
    while True:
        onset = int(t * sample_rate)
        if onset >= length:
            break
        k = int(rng.integers(len(sounds)))
        gain = 10.0 ** (-rng.uniform(0.0, cfg.event_gain_db_range) / 20.0)
        snd = sounds[k] / (float(np.max(np.abs(sounds[k]))) + 1e-12)
        stop = min(length, onset + len(snd))
        out[onset:stop] += gain * snd[: stop - onset]
        used.append(k)
        t += rng.uniform(0.5, 1.5) / rate
    peak = float(np.max(np.abs(out)))
    if peak > PEAK_LIMIT:
        out *= PEAK_LIMIT / peak
    return out.astype(np.float32), used


def build_noise_package(pkg: NoisePackage, noise: list[NoiseFile], out_root: Path,
                        version: str, seed: int, sample_rate: int, test_fraction: float,
                        val_fraction: float, cfg: RealNoiseConfig) -> list[IndexRow]:
    """Hold out files per kind, write segments and event sequences; returns index rows."""
    by_kind: dict[str, list[NoiseFile]] = defaultdict(list)
    for nf in noise:
        by_kind[nf.kind].append(nf)
    rows: list[IndexRow] = []
    for kind, files in sorted(by_kind.items()):
        split_of = hold_out([f.name for f in files], seed, f"noise/{pkg.package}/{kind}",
                            test_fraction, val_fraction)
        min_len = int(cfg.min_file_seconds * sample_rate)
        long_files = [f for f in files if len(f.audio) >= min_len]
        short_files = [f for f in files if len(f.audio) < min_len]
        rows += _write_segments(pkg, long_files, split_of, out_root, version, sample_rate, cfg)
        rows += _write_sequences(pkg, kind, short_files, split_of, out_root, version, seed,
                                 sample_rate, cfg)
    return rows


def _write_segments(pkg: NoisePackage, files: list[NoiseFile], split_of: dict[str, str],
                    out_root: Path, version: str, sample_rate: int,
                    cfg: RealNoiseConfig) -> list[IndexRow]:
    rows = []
    seg_len = int(cfg.segment_seconds * sample_rate)
    for nf in files:
        for i, part in enumerate(segment(nf.audio, seg_len)):
            rel = f"{NOISE_DIR}/{nf.kind}/{safe_stem(nf.stem)}_{i:03d}.wav"
            _write(out_root / rel, part, sample_rate)
            rows.append(IndexRow(path=rel, role="noise", split=split_of[nf.name], kind=nf.kind,
                                 duration_s=len(part) / sample_rate, source_package=pkg.package,
                                 source_version=version, license=nf.license,
                                 source_sample_rate=sample_rate, origin=nf.name))
    return rows


def _write_sequences(pkg: NoisePackage, kind: str, files: list[NoiseFile],
                     split_of: dict[str, str], out_root: Path, version: str, seed: int,
                     sample_rate: int, cfg: RealNoiseConfig) -> list[IndexRow]:
    rows = []
    length = int(cfg.event_sequence_seconds * sample_rate)
    for split, count in sorted(cfg.event_sequences.items()):
        pool = [f for f in files if split_of[f.name] == split]
        if not pool:
            continue
        for i in range(count):
            rng = window_rng(seed, f"noise/{pkg.package}/{kind}/events/{split}", i)
            audio, used = event_sequence([f.audio for f in pool], length, sample_rate, cfg, rng)
            names = sorted({pool[k].name for k in used})
            rel = f"{NOISE_DIR}/{kind}/{safe_stem(kind)}-events-{split}_{i:03d}.wav"
            _write(out_root / rel, audio, sample_rate)
            rows.append(IndexRow(
                path=rel, role="noise", split=split, kind=kind, duration_s=length / sample_rate,
                source_package=pkg.package, source_version=version,
                license=" AND ".join(sorted({pool[k].license for k in used})),
                source_sample_rate=sample_rate, origin=" ".join(names)))
    return rows


def _write(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > PEAK_LIMIT:
        audio = audio * (PEAK_LIMIT / peak)
    write_audio_atomic(path, audio.astype(np.float32), sample_rate, subtype=PCM_SUBTYPE)

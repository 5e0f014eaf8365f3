"""The DNS-style synthetic test set: ``testset/clean/clean_fileid_N.wav`` and
``testset/noisy/clnspN_<kind>_<noise>_snrS_tlL_fileid_N.wav``.

Names follow the DNS Challenge 2020 synthetic test set (``pipeline.dns``: ``clean_fileid_12.wav``
pairs with ``clnsp12_traffic_248091_3_snr5_tl-30_fileid_12.wav``), so evaluation code written for
the DNS test set runs on this one unchanged. Clips are cut from *test* speakers only and mixed
with *test* noise files only, with :func:`pipeline.mix.mix`; every draw for clip ``k`` comes
from :func:`pipeline.mix.window_rng` ``(seed, "test", k)``. As in the DNS synthesiser, a
mixture the clipping guard had to scale down is named with its actual level.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleancodec.core.audio import read_mono, write_audio_atomic
from cleancodec.core.corpus_index import IndexRow
from cleancodec.core.dns import clean_name, noisy_name
from cleancodec.datagen.demo.config import TestSetConfig
from cleancodec.pipeline.mix import MixConfig, active_fraction, fit_noise, mix, rms_dbfs, window_rng

TESTSET_DIR = "testset"
PCM_SUBTYPE = "PCM_16"
CLEAN_ORDER_SCOPE = "test/clean-order"


@dataclass
class CleanSegment:
    row: IndexRow
    start: int  # first sample in the clean file


def clean_segments(rows: list[IndexRow], root: Path, length: int,
                   sample_rate: int) -> list[CleanSegment]:
    """Non-overlapping ``length``-sample segments of the given clean files, in file order."""
    out = []
    for row in sorted(rows, key=lambda r: r.path):
        frames = int(round(row.duration_s * sample_rate))
        out += [CleanSegment(row, k * length) for k in range(frames // length)]
    return out


def _read(root: Path, rel: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Samples ``start:stop`` of the corpus file ``rel``, mono float32 ``[T]``."""
    return read_mono(root / rel, start, stop)[0]


def choose_clean(segments: list[CleanSegment], root: Path, length: int, sample_rate: int,
                 cfg: TestSetConfig, seed: int) -> list[tuple[CleanSegment, np.ndarray]]:
    """Up to ``cfg.clips`` segments in seeded random order that hold enough active speech."""
    vad = MixConfig(silence_threshold_db=cfg.silence_threshold_db)
    order = window_rng(seed, CLEAN_ORDER_SCOPE, 0).permutation(len(segments))
    chosen = []
    for idx in order:
        seg = segments[int(idx)]
        audio = _read(root, seg.row.path, seg.start, seg.start + length)
        enough = active_fraction(audio, sample_rate, vad) >= cfg.min_active_fraction
        if len(audio) == length and enough:
            chosen.append((seg, audio))
            if len(chosen) == cfg.clips:
                break
    return chosen


def draw_noise(rng: np.random.Generator, noise_rows: list[IndexRow], root: Path, length: int,
               cfg: TestSetConfig) -> tuple[IndexRow, np.ndarray]:
    """A noise kind (uniform), a file of it, and a ``length`` window louder than the floor."""
    by_kind: dict[str, list[IndexRow]] = {}
    for r in sorted(noise_rows, key=lambda r: r.path):
        by_kind.setdefault(r.kind, []).append(r)
    kinds = sorted(by_kind)
    for _ in range(cfg.max_noise_draws):
        files = by_kind[kinds[int(rng.integers(len(kinds)))]]
        row = files[int(rng.integers(len(files)))]
        window = fit_noise(_read(root, row.path), length, rng)
        if rms_dbfs(window) > cfg.noise_floor_dbfs:
            return row, window
    raise RuntimeError(f"no test noise window above {cfg.noise_floor_dbfs} dBFS in "
                       f"{cfg.max_noise_draws} draws")


def noise_tag(row: IndexRow) -> str:
    """``<kind>_<file stem>`` with ``-`` in place of any ``_`` inside either part."""
    stem = Path(row.path).stem.replace("_", "-")
    return f"{row.kind.replace('_', '-')}_{stem}"


def build_testset(clean_rows: list[IndexRow], noise_rows: list[IndexRow], root: Path,
                  seed: int, sample_rate: int, cfg: TestSetConfig) -> list[IndexRow]:
    """Write the test set under ``root/testset``; returns its index rows (two per clip).

    ``clean_rows``: clean files of the test speakers; ``noise_rows``: noise files of the test
    split. Raises ValueError when there is not enough test speech for ``cfg.clips`` clips.
    """
    if not noise_rows:
        raise ValueError("the test split has no noise files")
    length = int(cfg.seconds * sample_rate)
    segments = clean_segments(clean_rows, root, length, sample_rate)
    chosen = choose_clean(segments, root, length, sample_rate, cfg, seed)
    if len(chosen) < cfg.clips:
        raise ValueError(f"only {len(chosen)} test-speaker segments of {cfg.seconds} s with "
                         f"enough speech; the test set wants {cfg.clips}")
    mix_cfg = MixConfig(window_seconds=cfg.seconds)
    rows: list[IndexRow] = []
    for k, (seg, clean) in enumerate(tqdm(chosen, desc="testset", unit="clip", leave=False)):
        rows += _write_clip(k, seg, clean, noise_rows, root, seed, sample_rate, cfg, mix_cfg)
    return rows


def _write_clip(k: int, seg: CleanSegment, clean: np.ndarray, noise_rows: list[IndexRow],
                root: Path, seed: int, sample_rate: int, cfg: TestSetConfig,
                mix_cfg: MixConfig) -> list[IndexRow]:
    rng = window_rng(seed, "test", k)
    noise_row, noise = draw_noise(rng, noise_rows, root, len(clean), cfg)
    snr = int(rng.integers(cfg.snr_min_db, cfg.snr_max_db + 1))
    level = int(rng.integers(cfg.level_min_dbfs, cfg.level_max_dbfs + 1))
    res = mix(clean, noise, snr, level, cfg=mix_cfg, sample_rate=sample_rate)
    if res.clipped:  # the clipping guard lowered the mixture: name its real level, as DNS does
        level = int(round(rms_dbfs(res.noisy)))
    clean_rel = f"{TESTSET_DIR}/clean/{clean_name(k)}"
    noisy_rel = f"{TESTSET_DIR}/noisy/{noisy_name(k, noise_tag(noise_row), snr, level)}"
    write_audio_atomic(root / clean_rel, res.clean, sample_rate, subtype=PCM_SUBTYPE)
    write_audio_atomic(root / noisy_rel, res.noisy, sample_rate, subtype=PCM_SUBTYPE)
    clipped = "yes" if res.clipped else "no"
    origin = (f"clean={seg.row.path}@{seg.start / sample_rate:.2f}s "
              f"noise={noise_row.path} snr={snr} tl={level} clipped={clipped}")
    common = dict(split="test", kind=noise_row.kind, speaker=seg.row.speaker,
                  language=seg.row.language, duration_s=len(clean) / sample_rate,
                  source_package=seg.row.source_package, source_version=seg.row.source_version,
                  source_sample_rate=seg.row.source_sample_rate, origin=origin)
    licenses = " AND ".join(sorted({seg.row.license, noise_row.license} - {""}))
    return [IndexRow(path=clean_rel, role="testset-clean", license=seg.row.license, **common),
            IndexRow(path=noisy_rel, role="testset-noisy", license=licenses, **common)]

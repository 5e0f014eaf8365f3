"""The DNS Challenge test-set naming convention, parsed and written in one place.

The DNS Challenge 2020 synthetic test set names a clean target ``clean_fileid_12.wav`` and its
noisy mixture ``clnsp12_traffic_248091_3_snr5_tl-30_fileid_12.wav``: the pair shares the number
after the last ``fileid_``; the noisy name carries the SNR (dB) and target level (dBFS) as
integers. The evaluation pairs files by it, the demo corpus writes its test set with it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cleancodec.core.audio import list_audio_files

FILEID = re.compile(r"fileid_(\d+)")
SNR = re.compile(r"_snr(-?\d+)_")
TARGET_LEVEL = re.compile(r"_tl(-?\d+)_")
TAG_PART = re.compile(r"[A-Za-z0-9-]+")
FIELD_LIKE = re.compile(r"(snr|tl)-?\d")


def fileid(name: str) -> int | None:
    """The number after the last ``fileid_`` in a file name's stem (any path), or None."""
    found = FILEID.findall(PurePosixPath(name).stem)
    return int(found[-1]) if found else None


def clean_name(number: int) -> str:
    """``clean_fileid_N.wav``."""
    return f"clean_fileid_{number}.wav"


def noisy_name(number: int, noise_tag: str, snr_db: int, level_dbfs: int) -> str:
    """DNS-style noisy name ``clnspN_<noise_tag>_snrS_tlL_fileid_N.wav``.

    ``noise_tag`` is ``_``-separated parts of letters, digits and ``-``; no part may look like
    an SNR or level field (``snr5``, ``tl-20``) or contain ``fileid``, so parsing stays exact.
    """
    parts = noise_tag.split("_")
    bad = [p for p in parts if not TAG_PART.fullmatch(p) or FIELD_LIKE.match(p)
           or "fileid" in p]
    if bad:
        raise ValueError(f"noise tag {noise_tag!r}: part(s) {bad} would break DNS-style names")
    return f"clnsp{number}_{noise_tag}_snr{int(snr_db)}_tl{int(level_dbfs)}_fileid_{number}.wav"


@dataclass
class NoisyNameInfo:
    """What a DNS-style noisy name says: file id, SNR (dB), target level (dBFS)."""

    fileid: int
    snr_db: int
    level_dbfs: int


def parse_noisy_name(name: str) -> NoisyNameInfo:
    """Read fileid, SNR and target level from a DNS-style noisy file name."""
    number, snr, level = fileid(name), SNR.search(name), TARGET_LEVEL.search(name)
    if number is None or not (snr and level):
        raise ValueError(f"{name}: not a DNS-style noisy name (…_snrS_tlL_fileid_N.wav)")
    return NoisyNameInfo(number, int(snr.group(1)), int(level.group(1)))


def by_fileid(folder: str | Path) -> dict[int, Path]:
    """``fileid → file`` for the audio files under ``folder`` that carry one."""
    out: dict[int, Path] = {}
    for path in list_audio_files(folder):
        number = fileid(path.name)
        if number is not None:
            out[number] = path
    return out


def pair_by_fileid(clean_dir: str | Path, noisy_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(clean, noisy)`` pairs matched on ``fileid_N`` (sorted by N); unmatched files dropped."""
    clean, noisy = by_fileid(clean_dir), by_fileid(noisy_dir)
    return [(clean[k], noisy[k]) for k in sorted(set(clean) & set(noisy))]


__all__ = ["FILEID", "NoisyNameInfo", "by_fileid", "clean_name", "fileid", "noisy_name",
           "pair_by_fileid", "parse_noisy_name"]

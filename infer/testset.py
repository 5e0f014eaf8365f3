"""Pair enhanced files with their clean (and noisy) counterparts.

Two conventions, tried in this order for every enhanced file:

1. the same relative path (``a/b.wav`` ↔ ``a/b.wav``), or the same path with another audio
   extension (``a/b.flac`` ↔ ``a/b.wav``);
2. the DNS Challenge test-set convention (``pipeline.dns``): ``clean/clean_fileid_12.wav`` ↔
   ``noisy/book_..._snr5_tl-25_fileid_12.wav`` — the number after the last ``fileid_`` in the
   file name, looked up first in the same sub-folder, then anywhere in the tree when it is
   unique there.

So the real DNS 2020 ``synthetic/no_reverb`` test set (and its denoised copy, which keeps the
noisy names) pairs without renaming anything. Files left without a partner are listed.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cleancodec.core.audio import list_audio_files
from cleancodec.core.dns import fileid


@dataclass
class Pair:
    """One enhanced file and its references (paths; ``None`` where absent)."""

    key: str  # the enhanced file's relative path (posix)
    enhanced: Path
    clean: Path | None = None
    noisy: Path | None = None


@dataclass
class Pairing:
    """Pairs plus what could not be paired (relative paths)."""

    pairs: list[Pair] = field(default_factory=list)
    enhanced_without_clean: list[str] = field(default_factory=list)
    clean_without_enhanced: list[str] = field(default_factory=list)
    enhanced_without_noisy: list[str] = field(default_factory=list)

    def unmatched(self) -> dict[str, list[str]]:
        return {"enhanced_without_clean": self.enhanced_without_clean,
                "clean_without_enhanced": self.clean_without_enhanced,
                "enhanced_without_noisy": self.enhanced_without_noisy}


def list_audio(root: str | Path) -> dict[str, Path]:
    """Relative posix path → file, for every audio file under ``root`` (sorted).

    Raises FileNotFoundError when ``root`` is not a folder.
    """
    root = Path(root)
    return {p.relative_to(root).as_posix(): p for p in list_audio_files(root)}


class _Index:
    """Look-ups into one reference tree by path, stem and file id."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        self.by_id: dict[int, list[str]] = defaultdict(list)
        for rel in files:
            self.by_stem[str(PurePosixPath(rel).with_suffix(""))].append(rel)
            n = fileid(rel)
            if n is not None:
                self.by_id[n].append(rel)

    def match(self, rel: str) -> str | None:
        if rel in self.files:
            return rel
        same_stem = self.by_stem.get(str(PurePosixPath(rel).with_suffix("")), [])
        if len(same_stem) == 1:
            return same_stem[0]
        n = fileid(rel)
        if n is None:
            return None
        candidates = self.by_id.get(n, [])
        parent = PurePosixPath(rel).parent
        local = [c for c in candidates if PurePosixPath(c).parent == parent]
        if len(local) == 1:
            return local[0]
        return candidates[0] if len(candidates) == 1 else None


def pair_files(enhanced: str | Path, clean: str | Path | None = None,
               noisy: str | Path | None = None) -> Pairing:
    """Pair every enhanced file with a clean and a noisy file (see module docstring).

    Without ``clean`` (reference-free mode) every enhanced file is a pair of its own.
    """
    enh = list_audio(enhanced)
    clean_idx = _Index(list_audio(clean)) if clean is not None else None
    noisy_idx = _Index(list_audio(noisy)) if noisy is not None else None
    out = Pairing()
    used_clean: set[str] = set()
    for rel, path in enh.items():
        pair = Pair(rel, path)
        if clean_idx is not None:
            match = clean_idx.match(rel)
            if match is None:
                out.enhanced_without_clean.append(rel)
                continue
            pair.clean = clean_idx.files[match]
            used_clean.add(match)
        if noisy_idx is not None:
            match = noisy_idx.match(rel)
            if match is None:
                out.enhanced_without_noisy.append(rel)
            else:
                pair.noisy = noisy_idx.files[match]
        out.pairs.append(pair)
    if clean_idx is not None:
        out.clean_without_enhanced = [r for r in clean_idx.files if r not in used_clean]
    return out


__all__ = ["Pair", "Pairing", "list_audio", "pair_files"]

"""The cache's output folder: what in it is ours, what is scratch, and whether it may be reused.

A cache folder holds only names a build creates (:func:`is_ours`): ``manifest.json``,
``corpus.json``, ``rejected.tsv``, ``<split>.zarr`` or ``<split>-NNNNNN.tar``, the ``.tmp``
scratch folder, the ``.markers`` folder of other ranks, and temp names of those files
(``.<name>.<random>.tmp``, see :mod:`cleancodec.core.atomic`), and the build's lock file
``.cleancodec.lock`` (:mod:`cleancodec.core.dirlock`). A build refuses a folder with
anything else in it, and deletes only its own names.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from cleancodec.core.atomic import temp_target
from cleancodec.core.dirlock import LOCK_NAME
from cleancodec.pipeline import shards
from cleancodec.pipeline.build_errors import BuildError, CacheMismatchError
from cleancodec.pipeline.inputs import CORPUS_FILE, REJECTED_FILE, SPLITS
from cleancodec.pipeline.manifest import MANIFEST_NAME, MARKER_DIR, ManifestError, load_manifest

log = logging.getLogger(__name__)

_SPLIT_RE = "|".join(SPLITS)
_LIVE = re.compile(
    rf"^(?:{re.escape(MANIFEST_NAME)}|{re.escape(CORPUS_FILE)}|{re.escape(REJECTED_FILE)}"
    rf"|(?:{_SPLIT_RE})\.zarr|(?:{_SPLIT_RE})-\d{{6}}\.tar)$")
_FOLDERS = frozenset({shards.TMP_DIR, MARKER_DIR})
_KEPT = frozenset({LOCK_NAME})  # the build's folder lock: ours, but never deleted
# Staging names of builds before the one temp-name scheme; recognised only to clean them up.
_LEGACY_SCRATCH = re.compile(
    rf"^\.(?:(?:{_SPLIT_RE})\.zarr|(?:{_SPLIT_RE})-\d{{6}}\.tar)\.[0-9a-f]+\.partial$")


def is_scratch(name: str) -> bool:
    """True for a temp name of one of the cache's own files (left by a killed build)."""
    target = temp_target(name)
    return bool((target is not None and _LIVE.match(target)) or _LEGACY_SCRATCH.match(name))


def is_ours(name: str) -> bool:
    """True for names a cleancodec cache build creates in its folder (and its scratch files)."""
    return bool(_LIVE.match(name)) or name in _FOLDERS or name in _KEPT or is_scratch(name)


def _remove(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def clear_cache_dir(out_dir: Path) -> None:
    """Delete cleancodec's cache files in ``out_dir`` (nothing else)."""
    for entry in out_dir.iterdir() if out_dir.is_dir() else []:
        if is_ours(entry.name) and entry.name not in _KEPT:
            _remove(entry)


def clear_scratch(out_dir: Path) -> None:
    """Delete what a killed build may have left half-written (never a live file)."""
    shutil.rmtree(shards.scratch_dir(out_dir), ignore_errors=True)
    for entry in out_dir.iterdir():
        if is_scratch(entry.name):
            _remove(entry)


def check_out_dir(out_dir: Path, overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest to resume from, or None for a fresh build (after clearing).

    Raises BuildError for a folder holding other files, CacheMismatchError for an unreadable
    manifest (unless ``overwrite``, which deletes the old cache).
    """
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise BuildError(f"{out_dir}: exists and is not a folder")
    foreign = sorted(e.name for e in out_dir.iterdir() if not is_ours(e.name))
    if foreign:
        raise BuildError(f"{out_dir}: folder holds files that are not a cleancodec cache "
                         f"({', '.join(foreign[:5])}); choose an empty or new --out folder")
    if overwrite:
        clear_cache_dir(out_dir)
        return None
    if not (out_dir / MANIFEST_NAME).is_file():
        clear_cache_dir(out_dir)  # leftovers of a build killed before its manifest existed
        return None
    try:
        return load_manifest(out_dir)
    except ManifestError as exc:
        raise CacheMismatchError(f"{exc}; pass --overwrite to delete and rebuild it") from exc


def verify_done(cache_dir: Path, manifest: dict[str, Any], full: bool) -> int:
    """Reset done shards whose files are missing or changed (size; sha256 too when ``full``)
    to pending, in ``manifest``; returns how many."""
    reset = 0
    for split in manifest["splits"].values():
        for i, record in enumerate(split["shards"]):
            if record.get("status") != "done":
                continue
            for f in record.get("files", []):
                path = cache_dir / f["path"]
                if (not path.is_file() or path.stat().st_size != f["bytes"]
                        or (full and shards.sha256_file(path) != f["sha256"])):
                    log.warning("%s: missing or changed; shard %d will be rebuilt",
                                path, record["index"])
                    split["shards"][i] = {"index": record["index"], "status": "pending",
                                          "windows": record["windows"]}
                    reset += 1
                    break
    return reset


__all__ = ["check_out_dir", "clear_cache_dir", "clear_scratch", "is_ours", "is_scratch",
           "verify_done"]

"""The cache's description: ``<cache>/manifest.json``.

The manifest is the single place that holds the codec constants (sample rate, hop, latent dim,
frames per window, dtype, codec identity) once a cache exists; trainer and infer read them from
here and nowhere else. It is plain JSON, written atomically (temp file + rename).

Layout (format version 1)::

    {
      "format": "cleancodec-latent-cache", "format_version": 1,
      "storage": "zarr" | "webdataset",
      "codec": {"identity": {...}, "sample_rate": 16000, "hop_length": 320,
                "latent_dim": 1024, "n_codebooks": 12, "frame_rate": 50.0},
      "window": {"seconds": 3.0, "samples": 48000, "frames": 150},
      "dtype": "float16",
      "seed": 1234,
      "config": {... the cache section that built it ...},
      "splits": {
        "train": {"windows": N, "windows_per_shard": S, "path": "train.zarr"
                  | "pattern": "train-%06d.tar",
                  "shards": [{"index": 0, "status": "done", "windows": S,
                              "sha256": "...", "file": "..."}, ...]},
        "val": {...}
      },
      "complete": true,
      "versions": {"cleancodec": ..., "torch": ..., "dac": ..., "zarr": ..., ...}
    }
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cleancodec.pipeline.atomic import write_json_atomic

FORMAT = "cleancodec-latent-cache"
FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
__all__ = ["load_manifest", "save_manifest", "latent_shape", "done_shards",
           "manifest_path", "ManifestError", "FORMAT", "FORMAT_VERSION"]
STORAGES = ("zarr", "webdataset")


class ManifestError(ValueError):
    """A cache directory has no usable manifest, or one this version cannot read."""


def manifest_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / MANIFEST_NAME


def save_manifest(cache_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Atomically write ``manifest`` to ``<cache_dir>/manifest.json``."""
    path = manifest_path(cache_dir)
    write_json_atomic(path, manifest)
    return path


def load_manifest(cache_dir: str | Path, require_complete: bool = False) -> dict[str, Any]:
    """Read and check a cache manifest.

    Raises ManifestError when the file is missing, unreadable, of another format, of an unknown
    format version, or (with ``require_complete``) not marked complete.
    """
    path = manifest_path(cache_dir)
    if not path.is_file():
        raise ManifestError(f"{path}: no cache manifest (build one with `cleancodec cache`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a cleancodec latent cache (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version not in KNOWN_FORMAT_VERSIONS:
        raise ManifestError(
            f"{path}: cache format version {version!r} is not supported "
            f"(this cleancodec reads {list(KNOWN_FORMAT_VERSIONS)}); rebuild the cache"
        )
    if manifest.get("storage") not in STORAGES:
        raise ManifestError(f"{path}: unknown storage {manifest.get('storage')!r}")
    if require_complete and not manifest.get("complete"):
        raise ManifestError(f"{path}: cache build is not complete; rerun `cleancodec cache` to finish it")
    return manifest


def latent_shape(manifest: dict[str, Any]) -> tuple[int, int]:
    """``(latent_dim, frames_per_window)`` of one cached window."""
    return int(manifest["codec"]["latent_dim"]), int(manifest["window"]["frames"])


def done_shards(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Shard records of ``split`` whose status is ``done``, in index order."""
    shards = manifest["splits"].get(split, {}).get("shards", [])
    return sorted((s for s in shards if s.get("status") == "done"), key=lambda s: s["index"])

"""The cache's description: ``<cache>/manifest.json``.

The manifest is the single place that holds the codec constants (sample rate, hop, latent dim,
frames per window, dtype, codec identity) once a cache exists; trainer and infer read them from
here and nowhere else. It is plain JSON, written atomically (temp file + rename).

Layout (format version 2)::

    {
      "format": "cleancodec-latent-cache", "format_version": 2,
      "noisy_per_clean": K,           (absent in version 1: K = 1)
      "premixed": {"rule": "path" | "name" | "fileid", "candidates": {rule: pairs},
                   "noisy_per_clean": K, "pairs": P, "unpaired": {"clean": n, "noisy": n},
                   "rejected": n},   (premixed clean / noisy pairs only; then
                                      sources.noise lists the noisy files)
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

Besides reading and writing it, this module holds the build's bookkeeping around it:
:func:`new_manifest` (a fresh build, every shard ``pending``), :func:`compare_build` (may an
existing cache be resumed by this run?) and the :class:`Ledger` that marks shards ``done``
(rank 0 rewrites the manifest; other ranks drop marker files under ``.markers/``).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cleancodec.core.atomic import write_json_atomic

if TYPE_CHECKING:  # types only: readers import this module without the build
    from cleancodec.core.topology import Topology
    from cleancodec.pipeline.cache_config import CacheConfig
    from cleancodec.pipeline.inputs import Inputs
    from cleancodec.pipeline.plan import Plan, ShardTask

FORMAT = "cleancodec-latent-cache"
# 2: ``noisy_per_clean`` (K noisy variants per clean window; noisy arrays / tar members hold
#    K per window). A version-1 cache is read as K = 1.
FORMAT_VERSION = 2
KNOWN_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
__all__ = ["load_manifest", "save_manifest", "latent_shape", "done_shards",
           "manifest_path", "ManifestError", "FORMAT", "FORMAT_VERSION", "Ledger",
           "compare_build", "new_manifest", "package_versions", "MARKER_DIR"]
STORAGES = ("zarr", "webdataset")
MARKER_DIR = ".markers"
OPERATIONAL_KEYS = frozenset({"rank_timeout_minutes"})  # config keys that never change content
VERSION_PACKAGES = ("cleancodec", "torch", "descript-audio-codec", "zarr", "numcodecs",
                    "webdataset", "numpy", "soundfile", "soxr", "scipy")


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
    from cleancodec.core import remote

    if remote.is_url(cache_dir):
        path = remote.join(cache_dir, MANIFEST_NAME)
        try:
            manifest = json.loads(remote.read_bytes(str(path)))
        except remote.RemoteError as exc:
            raise ManifestError(f"{exc} (is it a cache location? it needs a {MANIFEST_NAME})"
                                ) from exc
        except ValueError as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    else:
        path = manifest_path(cache_dir)
        if not path.is_file():
            raise ManifestError(f"{path}: no cache manifest (build one with `cleancodec cache`)")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise ManifestError(
            f"{path}: not a cleancodec latent cache (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version not in KNOWN_FORMAT_VERSIONS:
        raise ManifestError(
            f"{path}: cache format version {version!r} is not supported "
            f"(this cleancodec reads {list(KNOWN_FORMAT_VERSIONS)}); rebuild it with "
            f"`cleancodec cache --out {cache_dir} --overwrite` (same --conf / inputs as before)"
        )
    if manifest.get("storage") not in STORAGES:
        raise ManifestError(f"{path}: unknown storage {manifest.get('storage')!r}")
    if require_complete and not manifest.get("complete"):
        raise ManifestError(
            f"{path}: cache build is not complete; rerun `cleancodec cache` to finish it")
    return manifest


def latent_shape(manifest: dict[str, Any]) -> tuple[int, int]:
    """``(latent_dim, frames_per_window)`` of one cached window."""
    return int(manifest["codec"]["latent_dim"]), int(manifest["window"]["frames"])


def done_shards(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Shard records of ``split`` whose status is ``done``, in index order."""
    shards = manifest["splits"].get(split, {}).get("shards", [])
    return sorted((s for s in shards if s.get("status") == "done"), key=lambda s: s["index"])


# --- building: a new manifest, resume checks, marking shards done ------------------------------


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the cache, plus Python's."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def now() -> str:
    """The current UTC time, ISO 8601 to the second (manifest timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(cfg: CacheConfig, plan: Plan, constants: dict[str, Any], inputs: Inputs,
                 corpus_record: dict[str, Any], codec_settings: dict[str, Any],
                 n_rejected: int) -> dict[str, Any]:
    """The manifest of a fresh build, every shard ``pending`` (layout: module docstring)."""
    from cleancodec.core.codec import RANDOM_INIT_BANNER
    from cleancodec.core.config import to_dict
    from cleancodec.pipeline.inputs import ROLES
    from cleancodec.pipeline.plan import SECONDS_PER_HOUR
    from cleancodec.pipeline.shards import WDS_PATTERN

    speakers = {e["rel"]: e["speaker"] for e in corpus_record["files"]["clean"]}
    splits = {}
    for name, sp in plan.splits.items():
        n_shards = math.ceil(sp.windows / plan.windows_per_shard)
        entry: dict[str, Any] = {
            "windows": sp.windows, "windows_per_shard": plan.windows_per_shard,
            "n_shards": n_shards, "clean_files": len(sp.clean), "noise_files": len(sp.noise),
            "speakers": len({speakers.get(plan.clean[i].rel) or f"file:{plan.clean[i].rel}"
                             for i in sp.clean}),
            "hours": sp.windows * cfg.mix.window_seconds / SECONDS_PER_HOUR,
            "shards": [{"index": i, "status": "pending",
                        "windows": min(plan.windows_per_shard,
                                       sp.windows - i * plan.windows_per_shard)}
                       for i in range(n_shards)]}
        if plan.storage == "zarr":
            entry["path"] = f"{name}.zarr"
        else:
            entry["pattern"] = WDS_PATTERN.format(split=name)
        splits[name] = entry
    random_init = constants["identity"].get("kind") == "random-init"
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "storage": plan.storage,
        "noisy_per_clean": plan.noisy_per_clean,
        "codec": constants, "codec_settings": codec_settings,
        "random_init": random_init,
        "notice": RANDOM_INIT_BANNER if random_init else None,
        "window": {"seconds": cfg.mix.window_seconds, "samples": plan.window_samples,
                   "frames": plan.frames},
        "dtype": plan.dtype, "seed": cfg.seed, "mix": to_dict(cfg.mix), "config": to_dict(cfg),
        "inputs": inputs.as_dict(), "corpus_fingerprint": corpus_record["fingerprint"],
        "sources": {role: [s.rel for s in getattr(plan, role)] for role in ROLES},
        "noise_shared_between_splits": plan.noise_shared,
        **({"premixed": corpus_record["pairing"]} if plan.premixed else {}),
        "splits": splits,
        "counts": {"windows": {n: sp.windows for n, sp in plan.splits.items()},
                   "rejected": n_rejected},
        "complete": False, "created": now(), "versions": package_versions(),
    }


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def compare_build(manifest: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Differences between an existing cache and this run (empty list: same build).

    ``wanted``: this run's ``codec`` constants, ``codec_settings``, ``config``, ``inputs`` and
    ``corpus_fingerprint``, in the manifest's layout.
    """
    from cleancodec.core.codec import describe_identity, identities_match

    diffs = []
    have_id, want_id = manifest.get("codec", {}).get("identity", {}), wanted["codec"]["identity"]
    if not identities_match(have_id, want_id):
        diffs.append(f"codec: cache has {describe_identity(have_id)}, this run "
                     f"{describe_identity(want_id)}")
    if manifest.get("codec_settings") != wanted["codec_settings"]:
        diffs.append(f"codec settings: cache {manifest.get('codec_settings')}, "
                     f"this run {wanted['codec_settings']}")
    have_cfg, want_cfg = _flatten(manifest.get("config", {})), _flatten(wanted["config"])
    for key in sorted((set(have_cfg) | set(want_cfg)) - OPERATIONAL_KEYS):
        if have_cfg.get(key) != want_cfg.get(key):
            diffs.append(f"config {key}: cache {have_cfg.get(key)!r}, "
                         f"this run {want_cfg.get(key)!r}")
    for role, path in wanted["inputs"].items():
        if manifest.get("inputs", {}).get(role) != path:
            diffs.append(f"{role} input: cache {manifest.get('inputs', {}).get(role)}, "
                         f"this run {path}")
    if manifest.get("corpus_fingerprint") != wanted["corpus_fingerprint"]:
        diffs.append("input files changed (added, removed or modified) since the cache was made")
    return diffs


class Ledger:
    """Marks shards done: rank 0 rewrites the manifest; other ranks drop marker files that
    rank 0 folds in (each write atomic).

    Attributes: ``cache_dir``, ``manifest`` (the dict being kept, rank 0's is authoritative) and
    ``topology`` (which rank this is).
    """

    def __init__(self, cache_dir: Path, manifest: dict[str, Any], topology: Topology):
        self.cache_dir = cache_dir
        self.manifest = manifest
        self.topology = topology

    @property
    def marker_dir(self) -> Path:
        return self.cache_dir / MARKER_DIR

    def _apply(self, split: str, record: dict[str, Any]) -> None:
        self.manifest["splits"][split]["shards"][record["index"]] = record

    def mark_done(self, split: str, record: dict[str, Any]) -> None:
        """Record a finished shard (its manifest record, ``status: done``)."""
        if not self.topology.is_main:
            write_json_atomic(self.marker_dir / f"{split}-{record['index']:06d}.json",
                              {"split": split, "record": record})
            return
        self._apply(split, record)
        self.sync()

    def sync(self) -> int:
        """Fold in other ranks' marker files, save the manifest, then delete those markers
        (in that order, so a kill at any point loses no finished shard). Returns how many."""
        markers = sorted(self.marker_dir.glob("*.json")) if self.marker_dir.is_dir() else []
        for path in markers:
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):  # unreadable marker: that shard is simply redone
                continue
            self._apply(entry["split"], entry["record"])
        save_manifest(self.cache_dir, self.manifest)
        for path in markers:
            path.unlink(missing_ok=True)
        return len(markers)

    def pending(self, plan: Plan) -> list[ShardTask]:
        """The plan's shards not yet ``done``, in build order."""
        done = {(split, s["index"]) for split, sp in self.manifest["splits"].items()
                for s in sp["shards"] if s.get("status") == "done"}
        return [t for t in plan.shard_tasks() if (t.split, t.index) not in done]

"""One split of the latent cache as the manifest describes it, and the checks every window read
passes (shared by the zarr and webdataset readers of :mod:`cleancodec.trainer.data`).

A window fails when its bytes fail their checksum or its latents are not finite; the readers
leave it out of its batch with one warning naming the file (:func:`skip_corrupt`) and count it
under :data:`CORRUPT_KEY` (:func:`stack_windows`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleancodec.core import remote
from cleancodec.pipeline.manifest import ManifestError, done_shards, latent_shape
from cleancodec.pipeline.shards import WDS_PATTERN

log = logging.getLogger(__name__)

TRAIN, VAL = "train", "val"
FIELDS = ("noisy", "clean")
CORRUPT_KEY = "corrupt"  # in a batch: windows left out because they failed their checks
Batch = dict[str, torch.Tensor]

# Tags that keep the seeded streams of different purposes apart.
TAG_EPOCH, TAG_SHARDS, TAG_SLOT, TAG_STATS = 101, 202, 303, 404


class CacheDataError(RuntimeError):
    """A cache file could not be read (the message names the file and the reason)."""


@dataclass(frozen=True)
class SplitSource:
    """What the manifest says about one split of the cache.

    ``rows`` are the global row numbers of the done windows, in split order (both storages: row
    ``index * windows_per_shard + j`` is window ``j`` of shard ``index``; for zarr, the row in the
    arrays). ``zarr_path`` (zarr) is the split's store; ``shards`` / ``shard_windows``
    (webdataset) are the done shard files and their window counts. ``sources`` is the manifest's
    ``{"clean" | "noise" | "rir": [relative path, ...]}`` (what metadata source indices point at).
    ``noisy_per_clean`` (K) noisy variants are stored per clean window: training *pair* ``p`` is
    variant ``p % K`` of window ``p // K`` (:attr:`pairs` of them). ``shard_indices`` are the done
    shards' indices, ``remote`` whether the cache is read from a URL.
    """

    split: str
    storage: str
    latent_dim: int
    frames: int
    dtype: str
    windows: int
    zarr_path: Path | str | None = None   # a str: a URL (remote)
    rows: np.ndarray | None = None
    shards: tuple[Path | str, ...] = ()
    shard_windows: tuple[int, ...] = ()
    sources: dict[str, list[str]] = field(default_factory=dict)
    noisy_per_clean: int = 1
    windows_per_shard: int = 1
    shard_indices: tuple[int, ...] = ()
    remote: bool = False

    @property
    def pairs(self) -> int:
        """Training pairs (noisy variant, its clean window) of the split."""
        return self.windows * self.noisy_per_clean


def open_split(cache_dir: str | Path, manifest: dict[str, Any], split: str) -> SplitSource:
    """Describe ``split`` of a cache from its manifest (done shards only).

    Raises
    ------
    ManifestError
        The split is absent or has no finished window, or a shard file is missing.
    """
    is_remote = remote.is_url(cache_dir)
    if not is_remote:
        cache_dir = Path(cache_dir)
    info = manifest.get("splits", {}).get(split)
    if info is None:
        raise ManifestError(f"{cache_dir}: the cache has no {split!r} split")
    done = done_shards(manifest, split)
    windows = sum(int(s["windows"]) for s in done)
    if windows == 0:
        raise ManifestError(f"{cache_dir}: the {split!r} split has no finished windows yet")
    latent_dim, frames = latent_shape(manifest)
    per = int(info["windows_per_shard"])
    rows = np.concatenate([np.arange(int(s["index"]) * per, int(s["index"]) * per
                                     + int(s["windows"])) for s in done]).astype(np.int64)
    common = dict(split=split, storage=manifest["storage"], latent_dim=latent_dim,
                  frames=frames, dtype=str(manifest.get("dtype", "float16")), windows=windows,
                  rows=rows, sources=dict(manifest.get("sources", {})),
                  noisy_per_clean=int(manifest.get("noisy_per_clean", 1)),
                  windows_per_shard=per, shard_indices=tuple(int(s["index"]) for s in done),
                  shard_windows=tuple(int(s["windows"]) for s in done), remote=is_remote)
    if manifest["storage"] == "zarr":
        path = remote.join(cache_dir, info.get("path", f"{split}.zarr"))
        if not is_remote and not Path(path).exists():
            raise ManifestError(f"{path}: zarr store named by the manifest is missing")
        return SplitSource(**common, zarr_path=path)
    files = []
    pattern = info.get("pattern", WDS_PATTERN.format(split=split))
    for s in done:
        name = s.get("file") or pattern % int(s["index"])
        path = remote.join(cache_dir, name)
        if not is_remote and not Path(path).is_file():
            raise ManifestError(f"{path}: shard marked done in the manifest is missing")
        files.append(path)
    return SplitSource(**common, shards=tuple(files))


def seeded_rng(*key: int) -> np.random.Generator:
    """The generator of one seeded stream, e.g. ``(seed, TAG_EPOCH, epoch)``."""
    return np.random.default_rng([int(k) for k in key])


# IEEE 754: a value is NaN or inf exactly when all its exponent bits are set. Read as signed
# integers, the positive ones are the largest values (>= the exponent mask); read as unsigned,
# the negative ones are the largest (>= sign bit | exponent mask). Two vectorised maxima find
# them without a temporary array.
NON_FINITE_BOUNDS = {np.dtype("float16"): (np.int16, 0x7C00, np.uint16, 0xFC00),
                     np.dtype("float32"): (np.int32, 0x7F800000, np.uint32, 0xFF800000)}


def has_non_finite(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds NaN or inf (two integer maxima over the bits for float16 /
    float32: ~3x faster than ``np.isfinite`` on float16)."""
    bounds = NON_FINITE_BOUNDS.get(arr.dtype)
    if bounds is None or not arr.flags.c_contiguous or arr.size == 0:
        return not np.isfinite(arr).all()
    signed, positive, unsigned, negative = bounds
    return bool(arr.view(signed).max() >= positive or arr.view(unsigned).max() >= negative)


def check_finite(arrays: dict[str, np.ndarray], where: str) -> None:
    """Raise CacheDataError ("corrupt") when a window's latents hold NaN or inf."""
    for name, arr in arrays.items():
        if has_non_finite(arr):
            raise CacheDataError(f"{where} is corrupt: non-finite values in {name}")


def stack_windows(items: list[dict[str, np.ndarray] | None]) -> Batch:
    """Windows → ``{"noisy", "clean"}`` ``Tensor[B x D x F]`` plus ``"corrupt"``: how many
    entries were ``None`` (windows that failed their checks and were left out)."""
    good = [it for it in items if it is not None]
    bad = len(items) - len(good)
    if not good:
        raise CacheDataError(f"every window of a batch of {len(items)} was corrupt (see the "
                             "warnings above for the files)")
    batch = {name: torch.from_numpy(np.stack([it[name] for it in good])) for name in FIELDS}
    batch[CORRUPT_KEY] = torch.tensor(bad)
    return batch


def skip_corrupt(read: Callable[..., Any], *args: Any) -> dict[str, np.ndarray] | None:
    """``read(*args)``, or ``None`` with one warning naming the file when it is corrupt."""
    try:
        return read(*args)
    except CacheDataError as exc:
        log.warning("%s; window skipped", exc)
        return None

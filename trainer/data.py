"""The one reader of the latent cache: cached latents → batches for the trainer, and windows with
their metadata for tests, benchmarks and tools, through the cache manifest only.

Both storages written by :mod:`cleancodec.pipeline.shards` are read, windows of *done* shards
only (the manifest's layout is described in :mod:`cleancodec.pipeline.manifest`):

- **zarr**: ``<cache>/<split>.zarr`` with arrays ``noisy`` / ``clean`` ``(N, D, F)``; a map-style
  dataset reads single windows (one inner chunk each), and :class:`EpochBatchSampler` deals a
  seeded permutation of all windows (across shards) to ranks, batch by batch.
- **webdataset**: ``<cache>/<split>-%06d.tar`` with ``{__key__, noisy.npy, clean.npy,
  meta.json}`` samples; :class:`WebDatasetStream` splits shards by node and worker, shuffles
  through a seeded buffer and yields a fixed number of batches per epoch.

Every random choice derives from ``(seed, epoch, ...)``, and both paths can start at any step:
the batch at step ``s`` is the same whether the run got there in one go or resumed (given the
same world size and worker count). Batches are dicts ``{"noisy", "clean"}`` of
``Tensor[B x D x F]`` in the cache dtype; ``.npy`` members decode with ``allow_pickle=False``.

Exact reads, on the same dataset / tar-decoding code the loaders use: :func:`read_window`
(window ``i`` of a split with its metadata), :func:`read_split` (every window of a split, in
order) and :func:`iter_tar_windows` (the samples of webdataset tars). This module never imports
the codec (``pipeline/codec.py``, ``dac``).
"""
from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from cleancodec.pipeline.manifest import ManifestError, done_shards, latent_shape
from cleancodec.pipeline.shards import CRC_KEY, META_FIELDS, SOURCE_FIELDS, WDS_PATTERN
from cleancodec.trainer.config import DataConfig

log = logging.getLogger(__name__)

TRAIN, VAL = "train", "val"
FIELDS = ("noisy", "clean")
CORRUPT_KEY = "corrupt"  # in a batch: windows left out because they failed their checks
Batch = dict[str, torch.Tensor]

# Tags that keep the seeded streams of different purposes apart.
_TAG_EPOCH, _TAG_SHARDS, _TAG_SLOT, _TAG_STATS = 101, 202, 303, 404


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
    """

    split: str
    storage: str
    latent_dim: int
    frames: int
    dtype: str
    windows: int
    zarr_path: Path | None = None
    rows: np.ndarray | None = None
    shards: tuple[Path, ...] = ()
    shard_windows: tuple[int, ...] = ()
    sources: dict[str, list[str]] = field(default_factory=dict)


def open_split(cache_dir: str | Path, manifest: dict[str, Any], split: str) -> SplitSource:
    """Describe ``split`` of a cache from its manifest (done shards only).

    Raises
    ------
    ManifestError
        The split is absent or has no finished window, or a shard file is missing.
    """
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
                  rows=rows, sources=dict(manifest.get("sources", {})))
    if manifest["storage"] == "zarr":
        path = cache_dir / info.get("path", f"{split}.zarr")
        if not path.exists():
            raise ManifestError(f"{path}: zarr store named by the manifest is missing")
        return SplitSource(**common, zarr_path=path)
    files = []
    pattern = info.get("pattern", WDS_PATTERN.format(split=split))
    for s in done:
        name = s.get("file") or pattern % int(s["index"])
        path = cache_dir / name
        if not path.is_file():
            raise ManifestError(f"{path}: shard marked done in the manifest is missing")
        files.append(path)
    return SplitSource(**common, shards=tuple(files),
                       shard_windows=tuple(int(s["windows"]) for s in done))


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


# --- zarr ------------------------------------------------------------------------------------


class ZarrWindows(Dataset):
    """Map-style access to the windows of a zarr split.

    ``dataset[i]`` is ``{"noisy", "clean"}`` of ``Tensor[D x F]``; ``dataset.__getitems__(idx)``
    (used by the DataLoader for a whole batch) stacks them to ``Tensor[B x D x F]``;
    :meth:`read_meta` gives window ``i``'s stored metadata. The store is opened lazily in each
    process (DataLoader workers included); the metadata arrays only when first asked for.
    """

    def __init__(self, path: Path, rows: np.ndarray):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._arrays: tuple[int, dict[str, Any]] | None = None
        self._meta_arrays: tuple[int, dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _open(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._arrays is None or self._arrays[0] != pid:
            import zarr

            try:
                group = zarr.open_group(str(self.path), mode="r")
                self._arrays = (pid, {name: group[name] for name in FIELDS})
            except Exception as exc:  # zarr raises many types for a broken store
                raise CacheDataError(f"{self.path}: cannot open latent arrays ({exc})") from exc
        return self._arrays[1]

    def _read(self, i: int) -> dict[str, np.ndarray]:
        row = int(self.rows[i])
        arrays = self._open()
        try:
            out = {name: np.asarray(arrays[name][row]) for name in FIELDS}
        except Exception as exc:
            if "checksum" in str(exc).lower():  # zarr's crc32c codec (caches built since it)
                raise CacheDataError(f"{self.path}: window row {row} is corrupt: its bytes fail "
                                     f"their crc32c checksum; rebuild that shard") from exc
            raise CacheDataError(f"{self.path}: cannot read window row {row} ({exc})") from exc
        _check_finite(out, f"{self.path}: window row {row}")
        return out

    def _open_meta(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._meta_arrays is None or self._meta_arrays[0] != pid:
            import zarr

            try:
                group = zarr.open_group(str(self.path), mode="r")
                present = set(group.array_keys())
                arrays = {name: group[name] for name in META_FIELDS if name in present}
            except Exception as exc:  # zarr raises many types for a broken store
                raise CacheDataError(
                    f"{self.path}: cannot open metadata arrays ({exc})") from exc
            self._meta_arrays = (pid, arrays)
        return self._meta_arrays[1]

    def read_meta(self, i: int) -> dict[str, Any]:
        """Stored metadata of window ``i``: the :data:`~cleancodec.pipeline.shards.META_FIELDS`
        the store holds, as Python scalars (source fields are indices into the manifest's
        ``sources``; ``rir_source`` -1 means dry)."""
        row = int(self.rows[i])
        arrays = self._open_meta()
        try:
            return {name: np.asarray(array[row]).item() for name, array in arrays.items()}
        except Exception as exc:
            raise CacheDataError(f"{self.path}: cannot read metadata of row {row} ({exc})") from exc

    def __getitem__(self, i: int) -> Batch:
        return {k: torch.from_numpy(v) for k, v in self._read(i).items()}

    def __getitems__(self, indices: list[int]) -> Batch:
        """The windows ``indices`` stacked (see :func:`stack_windows`): a corrupt window is left
        out with a warning and counted under ``"corrupt"``."""
        return stack_windows([_or_skip(self._read, i) for i in indices])


class EpochBatchSampler(Sampler[list[int]]):
    """Endless seeded batches of dataset indices, starting at any batch.

    Epoch ``e`` is a permutation of all ``n`` windows drawn from ``(seed, e)``, dealt to ranks
    round-robin (each rank gets ``n // world``) and cut into ``batch_size`` batches (a last
    partial batch is dropped). Batch ``k`` of this rank's stream is the same whatever ``start``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 start: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start = rank, world, start
        self.batches_per_epoch = (n // world) // batch_size
        if self.batches_per_epoch < 1:
            raise ManifestError(
                f"the train split has {n} windows: fewer than batch_size {batch_size} x "
                f"{world} rank(s); lower train.data.batch_size or build a larger cache"
            )

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch`` (length ``batches_per_epoch * batch_size``)."""
        perm = _rng(self.seed, _TAG_EPOCH, epoch).permutation(self.n)
        mine = perm[self.rank::self.world][: self.n // self.world]
        return mine[: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        step, cached = self.start, (None, None)
        while True:
            epoch, b = divmod(step, self.batches_per_epoch)
            if cached[0] != epoch:
                cached = (epoch, self.epoch_indices(epoch))
            yield cached[1][b * self.batch_size:(b + 1) * self.batch_size].tolist()
            step += 1

    def __len__(self) -> int:  # one epoch; the sampler itself is endless
        return self.batches_per_epoch


# --- webdataset ------------------------------------------------------------------------------


def iter_tar_samples(path: Path) -> Iterator[dict[str, Any]]:
    """Samples of a webdataset tar: ``{"__key__": str, "<field>.<ext>": bytes, ...}``.

    Files are grouped by key (the base name up to its first dot), in archive order.

    Raises
    ------
    CacheDataError
        The file is not a readable tar archive (message names it).
    """
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, _, field = base.partition(".")
                prefix = member.name[: len(member.name) - len(base)] + key
                if current is not None and current["__key__"] != prefix:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": prefix}
                current[field] = tf.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CacheDataError(f"{path}: unreadable webdataset shard ({exc})") from exc
    if current is not None:
        yield current


def decode_sample(sample: dict[str, Any], source: Path,
                  shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{noisy.npy, clean.npy}`` bytes → arrays ``[D x F]`` (no pickle), checksums, shape and
    finiteness checked."""
    _check_crc(sample, source)
    out = {}
    for name in FIELDS:
        blob = sample.get(f"{name}.npy")
        if blob is None:
            raise CacheDataError(f"{source}: sample {sample['__key__']!r} has no {name}.npy")
        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except ValueError as exc:
            raise CacheDataError(
                f"{source}: sample {sample['__key__']!r}: bad {name}.npy ({exc})") from exc
        if tuple(arr.shape) != shape:
            raise CacheDataError(f"{source}: sample {sample['__key__']!r}: {name} has shape "
                                 f"{tuple(arr.shape)}, the manifest says {shape}")
        out[name] = arr
    _check_finite(out, f"{source}: sample {sample['__key__']!r}")
    return out


def _check_crc(sample: dict[str, Any], source: Path) -> None:
    """Compare each ``.npy`` member with the crc32 its ``meta.json`` records (caches written
    before checksums have none: nothing to check)."""
    try:
        recorded = json.loads(sample.get("meta.json", b"{}")).get(CRC_KEY, {})
    except ValueError as exc:
        raise CacheDataError(f"{source}: sample {sample['__key__']!r} is corrupt: unreadable "
                             f"meta.json ({exc})") from exc
    for member, crc in recorded.items():
        blob = sample.get(member)
        if blob is not None and zlib.crc32(blob) != int(crc):
            raise CacheDataError(f"{source}: sample {sample['__key__']!r} is corrupt: {member} "
                                 "fails its crc32 checksum")


def _check_finite(arrays: dict[str, np.ndarray], where: str) -> None:
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
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


def _or_skip(read: Any, *args: Any) -> dict[str, np.ndarray] | None:
    """``read(*args)``, or ``None`` with one warning naming the file when it is corrupt."""
    try:
        return read(*args)
    except CacheDataError as exc:
        log.warning("%s; window skipped", exc)
        return None


def _tagged_samples(shards: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Raw samples of ``shards`` in order; an unreadable shard is logged and skipped."""
    for path in shards:
        try:
            for sample in iter_tar_samples(path):
                yield path, sample
        except CacheDataError as exc:
            log.warning("skipping shard: %s", exc)


def _shuffled(samples: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Shuffle an endless stream through a buffer of ``size`` items."""
    buf: list[Any] = []
    for item in samples:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(len(buf)))
        buf[j], item = item, buf[j]
        yield item
    rng.shuffle(buf)
    yield from buf


class WebDatasetStream(IterableDataset):
    """Endless seeded batches from webdataset shards, split by node and worker.

    The stream of this rank is cut into ``epoch_batches`` batches per epoch and numbered
    globally; with ``W`` workers (``W = 1`` without workers) batch ``g`` comes from stream slot
    ``g mod W``. Slot ``j`` of epoch ``e`` reads the shards ``perm_e[(rank * W + j)::(world * W)]``
    (``perm_e`` a ``(seed, e)`` permutation; when there are fewer shards than streams it draws
    shards with replacement instead), in a loop if it needs more windows than they hold, through
    a shuffle buffer seeded by ``(seed, e, rank, j)``. Starting at batch ``start`` skips the
    earlier samples of the slot without decoding them, so a resumed run sees the same batches.
    """

    def __init__(self, source: SplitSource, batch_size: int, seed: int, epoch_batches: int,
                 shuffle_buffer: int, rank: int = 0, world: int = 1, start: int = 0):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.epoch_batches, self.shuffle_buffer = epoch_batches, shuffle_buffer
        self.rank, self.world, self.start = rank, world, start
        self.shape = (source.latent_dim, source.frames)

    def _slot_shards(self, epoch: int, slot: int, slots: int, cycle: int) -> list[Path]:
        shards = list(self.source.shards)
        perm = _rng(self.seed, _TAG_SHARDS, epoch).permutation(len(shards))
        streams = self.world * slots
        if len(shards) >= streams:
            mine = [shards[i] for i in perm[(self.rank * slots + slot)::streams]]
            if cycle:
                mine = [mine[i] for i in _rng(self.seed, _TAG_SHARDS, epoch, cycle, self.rank,
                                               slot).permutation(len(mine))]
            return mine
        pick = _rng(self.seed, _TAG_SHARDS, epoch, cycle, self.rank, slot).integers(
            len(shards), size=max(1, len(shards)))
        return [shards[i] for i in pick]

    def _slot_samples(self, epoch: int, slot: int, slots: int) -> Iterator[tuple[Path, dict]]:
        def endless() -> Iterator[tuple[Path, dict]]:
            cycle = 0
            while True:
                got = 0
                for item in _tagged_samples(self._slot_shards(epoch, slot, slots, cycle)):
                    got += 1
                    yield item
                if got == 0 and cycle > 0:
                    raise CacheDataError(f"{self.source.shards[0].parent}: no readable "
                                         f"{self.source.split} shard for this stream")
                cycle += 1

        rng = _rng(self.seed, _TAG_SLOT, epoch, self.rank, slot)
        return _shuffled(endless(), self.shuffle_buffer, rng)

    def _batch(self, items: list[tuple[Path, dict]]) -> Batch:
        return stack_windows([_or_skip(decode_sample, sample, path, self.shape)
                              for path, sample in items])

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, slots = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader asks worker 0 first, so worker w serves the slot of batch start + w.
        g = self.start + worker
        slot = g % slots
        E, B = self.epoch_batches, self.batch_size
        while True:
            epoch = g // E
            first = epoch * E + (slot - epoch * E) % slots   # first batch of this slot in epoch
            samples = self._slot_samples(epoch, slot, slots)
            for _ in range(((g - first) // slots) * B):        # resume: skip, no decoding
                next(samples)
            while g < (epoch + 1) * E:
                yield self._batch([next(samples) for _ in range(B)])
                g += slots


# --- loaders ---------------------------------------------------------------------------------


def _identity(batch: Batch) -> Batch:
    return batch


def wds_epoch_batches(source: SplitSource, cfg: DataConfig, world: int) -> int:
    """Batches per rank per epoch of the webdataset path (fixed epoch length)."""
    per_rank = cfg.epoch_windows or source.windows // world
    batches = per_rank // cfg.batch_size
    if batches < 1:
        raise ManifestError(
            f"the train split has {source.windows} windows: fewer than batch_size "
            f"{cfg.batch_size} x {world} rank(s); lower train.data.batch_size"
        )
    return batches


def train_batches(source: SplitSource, cfg: DataConfig, seed: int, rank: int = 0,
                  world: int = 1, start: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """Endless training batches for this rank, beginning with the batch of step ``start``.

    Returns an iterator of ``{"noisy", "clean"}`` ``Tensor[B x D x F]`` (cache dtype).
    """
    workers = cfg.num_workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = dict(persistent_workers=True, prefetch_factor=cfg.prefetch_factor)
    if source.storage == "zarr":
        sampler = EpochBatchSampler(len(source.rows), cfg.batch_size, seed, rank, world, start)
        loader = DataLoader(ZarrWindows(source.zarr_path, source.rows), batch_sampler=sampler,
                            num_workers=workers, collate_fn=_identity, pin_memory=pin_memory,
                            **extra)
    else:
        stream = WebDatasetStream(source, cfg.batch_size, seed,
                                  wds_epoch_batches(source, cfg, world), cfg.shuffle_buffer,
                                  rank, world, start)
        loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_identity,
                            pin_memory=pin_memory, **extra)
    return iter(loader)


def val_batches(source: SplitSource, cfg: DataConfig, rank: int = 0,
                world: int = 1) -> Iterator[Batch]:
    """This rank's share of the validation split, in a fixed order, in ``val_batch_size`` batches.

    ``cfg.val_max_windows`` caps the windows used over all ranks. zarr: the first ``cap`` windows
    of the split, dealt to ranks round-robin; webdataset: rank ``r`` reads the shards
    ``r::world`` in order and stops after its round-robin share of ``cap`` windows. An unreadable
    webdataset shard is logged and skipped.
    """
    cap = cfg.val_max_windows
    B = cfg.val_batch_size
    if source.storage == "zarr":
        rows = source.rows[:cap] if cap else source.rows
        data = ZarrWindows(source.zarr_path, rows[rank::world])
        for start in range(0, len(data), B):
            yield data.__getitems__(list(range(start, min(start + B, len(data)))))
        return
    my_cap = None if not cap else len(range(rank, cap, world))
    shards = source.shards[rank::world]
    pending: list[tuple[Path, dict]] = []
    seen = 0
    for item in _tagged_samples(shards):
        if my_cap is not None and seen >= my_cap:
            break
        pending.append(item)
        seen += 1
        if len(pending) == B:
            yield _decode_batch(pending, source)
            pending = []
    if pending:
        yield _decode_batch(pending, source)


def _decode_batch(items: list[tuple[Path, dict]], source: SplitSource) -> Batch:
    shape = (source.latent_dim, source.frames)
    return stack_windows([_or_skip(decode_sample, sample, path, shape) for path, sample in items])


# --- exact reads with metadata (tests, benchmarks, tools) -------------------------------------


Window = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _sample_meta(sample: dict[str, Any], source: Path) -> dict[str, Any]:
    blob = sample.get("meta.json")
    if blob is None:
        return {}
    try:
        return json.loads(blob)
    except ValueError as exc:
        raise CacheDataError(
            f"{source}: sample {sample['__key__']!r}: bad meta.json ({exc})") from exc


def iter_tar_windows(paths: Iterable[str | Path],
                     shape: tuple[int, int]) -> Iterator[dict[str, Any]]:
    """Every sample of webdataset tars, in order: ``{"key": str, "clean", "noisy":
    ndarray [D x F] (``shape``, cache dtype, loaded without pickle), "meta": dict}``
    (``meta.json`` as written, ``{}`` when absent). Decoded like the training stream
    (:func:`iter_tar_samples`, :func:`decode_sample`), but an unreadable tar raises.

    Raises
    ------
    CacheDataError
        A tar or a sample cannot be read, or a latent is not of ``shape``.
    """
    for path in paths:
        path = Path(path)
        for sample in iter_tar_samples(path):
            arrays = decode_sample(sample, path, shape)
            yield {"key": sample["__key__"], "clean": arrays["clean"], "noisy": arrays["noisy"],
                   "meta": _sample_meta(sample, path)}


def _stored_windows(source: SplitSource, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[dict[str, np.ndarray], dict]]:
    """Windows ``start..stop-1`` of ``source`` in split order: ``({"noisy", "clean"}, stored
    metadata)``; stored metadata is the zarr metadata arrays' values (source indices) or the
    webdataset ``meta.json`` (source paths)."""
    stop = source.windows if stop is None else min(stop, source.windows)
    if source.storage == "zarr":
        data = ZarrWindows(source.zarr_path, source.rows)
        for i in range(start, stop):
            yield data._read(i), data.read_meta(i)
        return
    shape = (source.latent_dim, source.frames)
    first = 0                                 # split index of the shard's first window
    for path, count in zip(source.shards, source.shard_windows):
        if first >= stop:
            return
        if first + count > start:
            got = 0
            for j, sample in enumerate(iter_tar_samples(path)):
                got += 1
                if start <= first + j < stop:
                    yield decode_sample(sample, path, shape), _sample_meta(sample, path)
            if got != count:
                raise CacheDataError(f"{path}: holds {got} windows, the manifest says {count}")
        first += count


def _source_path(source: SplitSource, kind: str, index: int) -> str | None:
    if index < 0:
        return None
    names = source.sources.get(kind, [])
    if index >= len(names):
        raise CacheDataError(f"{source.split}: {kind} source index {index} is not in the "
                             f"manifest's {len(names)} {kind} sources")
    return names[index]


def _window_meta(source: SplitSource, stored: dict[str, Any], row: int) -> dict[str, Any]:
    meta = {name: stored[name] for name in META_FIELDS if name in stored}
    for name, kind in SOURCE_FIELDS.items():
        if name not in meta:
            continue
        value = meta[name]
        if value is None or isinstance(value, str):   # webdataset: the path is stored
            names = source.sources.get(kind, [])
            if value is not None and value not in names:
                raise CacheDataError(f"{source.split}: {kind} source {value!r} is not in the "
                                     "manifest's sources")
            meta[name] = -1 if value is None else names.index(value)
            meta[f"{kind}_path"] = value
        else:
            meta[f"{kind}_path"] = _source_path(source, kind, int(value))
    meta["row"] = row
    return meta


def _path_meta(source: SplitSource, stored: dict[str, Any]) -> dict[str, Any]:
    meta = {name: stored[name] for name in META_FIELDS if name in stored}
    for name, kind in SOURCE_FIELDS.items():
        if name in meta and not (meta[name] is None or isinstance(meta[name], str)):
            meta[name] = _source_path(source, kind, int(meta[name]))
    return meta


def read_window(source: SplitSource, i: int) -> Window:
    """Window ``i`` (0-based, split order, done windows only) of a split, either storage.

    Returns
    -------
    clean, noisy : ndarray [D x F]
        Cache dtype.
    meta : dict
        The stored :data:`~cleancodec.pipeline.shards.META_FIELDS` (source fields as indices
        into the manifest's ``sources``, ``rir_source`` -1 for dry), ``clean_path`` /
        ``noise_path`` / ``rir_path`` (relative source paths, ``None`` for no RIR) and ``row``
        (:attr:`SplitSource.rows`).
    """
    if not 0 <= i < source.windows:
        raise IndexError(f"window {i} of the {source.split!r} split ({source.windows} windows)")
    for arrays, stored in _stored_windows(source, i, i + 1):
        return arrays["clean"], arrays["noisy"], _window_meta(source, stored, int(source.rows[i]))
    raise CacheDataError(f"{source.split}: window {i} is missing from its shard")


def read_split(source: SplitSource) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Every done window of a split, in order, either storage — for small caches and tests.

    Returns
    -------
    clean, noisy : ndarray [n x D x F]
        Cache dtype.
    metas : list of dict
        Per window, the stored :data:`~cleancodec.pipeline.shards.META_FIELDS` with source fields
        as relative paths (``rir_source`` ``None`` for dry), as in a webdataset ``meta.json``.
    """
    clean, noisy, metas = [], [], []
    for arrays, stored in _stored_windows(source):
        clean.append(arrays["clean"])
        noisy.append(arrays["noisy"])
        metas.append(_path_meta(source, stored))
    if len(metas) != source.windows:
        raise CacheDataError(f"{source.split}: read {len(metas)} windows, the manifest says "
                             f"{source.windows}")
    return np.stack(clean), np.stack(noisy), metas


def latent_stats(source: SplitSource, n_windows: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of clean and noisy latents over up to ``n_windows`` windows.

    zarr: a seeded sample of windows; webdataset: the first windows of a seeded shard order.

    Returns
    -------
    mean, std : Tensor[D]
        float32.
    """
    total = np.zeros(source.latent_dim, dtype=np.float64)
    total_sq = np.zeros(source.latent_dim, dtype=np.float64)
    count = 0
    for window in _stats_windows(source, n_windows, seed):
        if window is None:  # corrupt: warned about and left out
            continue
        for name in FIELDS:
            x = window[name].astype(np.float64)
            total += x.sum(axis=1)
            total_sq += (x * x).sum(axis=1)
            count += x.shape[1]
    if count == 0:
        raise CacheDataError(f"{source.split}: every window sampled for the latent statistics "
                             "was corrupt (see the warnings above)")
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()


def _stats_windows(source: SplitSource, n_windows: int,
                   seed: int) -> Iterator[dict[str, np.ndarray] | None]:
    rng = _rng(seed, _TAG_STATS)
    if source.storage == "zarr":
        data = ZarrWindows(source.zarr_path, source.rows)
        picks = np.sort(rng.choice(len(data), size=min(n_windows, len(data)), replace=False))
        for i in picks:
            yield _or_skip(data._read, int(i))
        return
    shards = [source.shards[i] for i in rng.permutation(len(source.shards))]
    shape = (source.latent_dim, source.frames)
    for n, (path, sample) in enumerate(_tagged_samples(shards)):
        if n >= n_windows:
            return
        yield _or_skip(decode_sample, sample, path, shape)

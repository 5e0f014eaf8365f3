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
the codec (``cleancodec/core/codec.py``, ``dac``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cleancodec.core import remote
from cleancodec.pipeline.manifest import ManifestError
from cleancodec.pipeline.shards import META_FIELDS, SOURCE_FIELDS
from cleancodec.trainer.cache_split import (
    CORRUPT_KEY,
    FIELDS,
    TAG_EPOCH,
    TAG_STATS,
    TRAIN,
    VAL,
    Batch,
    CacheDataError,
    SplitSource,
    check_finite,
    open_split,
    seeded_rng,
    skip_corrupt,
    stack_windows,
)
from cleancodec.trainer.config import DataConfig
from cleancodec.trainer.mapped import MappedWindows, NotMappable, mappable
from cleancodec.trainer.tars import (
    WebDatasetStream,
    decode_sample,
    iter_tar_samples,
    iter_tar_windows,
    sample_meta,
    tagged_samples,
)

log = logging.getLogger(__name__)

# --- zarr ------------------------------------------------------------------------------------


class ZarrWindows(Dataset):
    """Map-style access to the training pairs of a zarr split through zarr's codec pipeline (any
    compressor, local or remote store): the generic path, for caches :mod:`.mapped` cannot map.

    ``dataset[p]`` is pair ``p`` (noisy variant ``p % K`` of window ``p // K``) as
    ``{"noisy", "clean"}`` ``Tensor[D x F]``; ``dataset.__getitems__(pairs)`` (used by the
    DataLoader for a whole batch) stacks them to ``Tensor[B x D x F]``; :meth:`read_meta` gives
    a pair's stored metadata. The store is opened lazily in each process (DataLoader workers
    included); the metadata arrays only when first asked for.
    """

    def __init__(self, path: Path | str, rows: np.ndarray, noisy_per_clean: int = 1):
        self.path = path
        self.rows = np.asarray(rows, dtype=np.int64)
        self.K = int(noisy_per_clean)
        self._arrays: tuple[int, dict[str, Any]] | None = None
        self._meta_arrays: tuple[int, dict[str, Any]] | None = None

    @classmethod
    def of(cls, source: SplitSource) -> ZarrWindows:
        return cls(source.zarr_path, source.rows, source.noisy_per_clean)

    def __len__(self) -> int:
        return len(self.rows) * self.K

    def _group(self) -> Any:
        import zarr

        return zarr.open_group(remote.zarr_store(self.path), mode="r")

    def _open(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._arrays is None or self._arrays[0] != pid:
            try:
                group = self._group()
                self._arrays = (pid, {name: group[name] for name in FIELDS})
            except Exception as exc:  # zarr raises many types for a broken store
                raise CacheDataError(f"{self.path}: cannot open latent arrays ({exc})") from exc
        return self._arrays[1]

    def _rows(self, p: int) -> dict[str, int]:
        i, k = divmod(int(p), self.K)
        row = int(self.rows[i])
        return {"clean": row, "noisy": row * self.K + k}

    def _read(self, p: int) -> dict[str, np.ndarray]:
        return {name: self._read_row(name, row) for name, row in self._rows(p).items()}

    def _read_row(self, name: str, row: int, out: np.ndarray | None = None) -> np.ndarray:
        """Row ``row`` of array ``name`` (into ``out`` when given), checked: a failing zarr
        crc32c (caches built since it) or non-finite values raise CacheDataError "corrupt"."""
        try:
            value = self._open()[name][row]
        except Exception as exc:  # zarr raises many types for a broken chunk
            kind = ("is corrupt: its bytes fail their crc32c checksum; rebuild that shard"
                    if "checksum" in str(exc).lower() else f"cannot be read ({exc})")
            raise CacheDataError(f"{self.path}: {name} row {row} {kind}") from exc
        if out is None:
            out = np.asarray(value)
        else:
            out[...] = value
        check_finite({name: out}, f"{self.path}: {name} row {row}")
        return out

    def read_clean(self, i: int, out: np.ndarray) -> None:
        """Copy clean window ``i`` into ``out`` ``[D x F]`` (checked)."""
        self._read_row("clean", int(self.rows[i]), out)

    def read_noisy(self, i: int, k: int, out: np.ndarray) -> None:
        """Copy noisy variant ``k`` of window ``i`` into ``out`` ``[D x F]`` (checked)."""
        self._read_row("noisy", int(self.rows[i]) * self.K + k, out)

    def _open_meta(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._meta_arrays is None or self._meta_arrays[0] != pid:
            try:
                group = self._group()
                present = set(group.array_keys())
                arrays = {name: group[name] for name in META_FIELDS if name in present}
            except Exception as exc:  # zarr raises many types for a broken store
                raise CacheDataError(
                    f"{self.path}: cannot open metadata arrays ({exc})") from exc
            self._meta_arrays = (pid, arrays)
        return self._meta_arrays[1]

    def read_meta(self, p: int) -> dict[str, Any]:
        """Stored metadata of pair ``p`` (its noisy variant): the
        :data:`~cleancodec.pipeline.shards.META_FIELDS` the store holds, as Python scalars
        (source fields are indices into the manifest's ``sources``; ``rir_source`` -1 means
        dry)."""
        row = self._rows(p)["noisy"]
        arrays = self._open_meta()
        try:
            return {name: np.asarray(array[row]).item() for name, array in arrays.items()}
        except Exception as exc:
            raise CacheDataError(f"{self.path}: cannot read metadata of row {row} ({exc})") from exc

    def __getitem__(self, p: int) -> Batch:
        return {k: torch.from_numpy(v) for k, v in self._read(p).items()}

    def __getitems__(self, indices: list[int]) -> Batch:
        """The pairs ``indices`` stacked (see :func:`stack_windows`): a corrupt window is left
        out with a warning and counted under ``"corrupt"``."""
        return stack_windows([skip_corrupt(self._read, i) for i in indices])


def block_shuffle(n: int, rng: np.random.Generator, block: int, buffer: int) -> np.ndarray:
    """A seeded order of ``range(n)`` read in runs: the indices are cut into blocks of ``block``
    consecutive ones (consecutive windows of one shard), the blocks are permuted, then the
    sequence is mixed within each run of ``buffer`` positions. ``block <= 1``: a plain
    permutation."""
    if block <= 1:
        return rng.permutation(n)
    starts = rng.permutation(np.arange(0, n, block))
    seq = (starts[:, None] + np.arange(block)[None, :]).reshape(-1)
    seq = seq[seq < n]
    if buffer > 1:
        groups = np.arange(n) // buffer
        seq = seq[np.lexsort((rng.random(n), groups))]
    return seq


class EpochBatchSampler(Sampler[list[int]]):
    """Endless seeded batches of dataset indices, starting at any batch.

    Epoch ``e`` is an order of all ``n`` pairs drawn from ``(seed, e)`` (:func:`block_shuffle`
    with ``block`` and ``buffer``), dealt to ranks round-robin (each rank gets ``n // world``) and
    cut into ``batch_size`` batches (a last partial batch is dropped). Batch ``k`` of this rank's
    stream is the same whatever ``start``.

    ``group`` > 1 keeps runs of ``group`` consecutive indices together (the K noisy variants of
    one clean window): the order is drawn over the ``n // group`` groups (``block`` and
    ``buffer`` are divided by ``group``, so runs stay as long in pairs), groups are dealt to
    ranks, and each group's indices follow one another, so a batch holds whole groups (but where
    a group straddles two batches).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 start: int = 0, block: int = 1, buffer: int = 0, group: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start = rank, world, start
        self.group = max(1, int(group))
        self.block, self.buffer = block, buffer
        self.units = n // self.group
        self.batches_per_epoch = (self.units // world) * self.group // batch_size
        if self.batches_per_epoch < 1:
            raise ManifestError(
                f"the train split has {n} windows: fewer than batch_size {batch_size} x "
                f"{world} rank(s); lower train.data.batch_size or build a larger cache"
            )

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch`` (length ``batches_per_epoch * batch_size``)."""
        g = self.group
        perm = block_shuffle(self.units, seeded_rng(self.seed, TAG_EPOCH, epoch),
                             max(1, self.block // g), max(1, self.buffer // g))
        mine = perm[self.rank::self.world][: self.units // self.world]
        if g > 1:
            mine = (mine[:, None] * g + np.arange(g)[None, :]).reshape(-1)
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


def pair_dataset(source: SplitSource, in_flight: int = 0) -> Dataset:
    """The map-style dataset of a split's training pairs: indexed byte ranges
    (:class:`~cleancodec.trainer.mapped.MappedWindows`) when the cache allows it, else zarr's
    codec pipeline (:class:`ZarrWindows`). Raises CacheDataError for a webdataset cache that
    cannot be mapped (remote, or without checksums): it is read as a stream instead.
    ``in_flight``: batches a DataLoader worker may have handed over and not yet seen released
    (its queue, ``prefetch_factor``): the worker then reuses that many shared-memory batches."""
    if mappable(source):
        try:
            return MappedWindows(source, in_flight=in_flight)
        except NotMappable as exc:
            if source.storage != "zarr":
                raise CacheDataError(str(exc)) from exc
            log.info("%s", exc)
    if source.storage == "zarr":
        why = "a remote store" if source.remote else "compressed latents"
        log.info("%s: read through zarr's codec pipeline (%s); a local cache built with "
                 "cache.compressor=none is read at memory speed", source.zarr_path, why)
        return ZarrWindows.of(source)
    raise CacheDataError(f"{source.split}: webdataset shards at {source.shards[0]} are read as a "
                         "stream")


def train_sampler(source: SplitSource, cfg: DataConfig, seed: int, rank: int = 0,
                  world: int = 1, start: int = 0) -> EpochBatchSampler:
    """The seeded batches of pair indices of this rank, from step ``start`` on (block shuffle
    with ``train.data.shuffle_block`` / ``shuffle_buffer``)."""
    return EpochBatchSampler(source.pairs, cfg.batch_size, seed, rank, world, start,
                             block=cfg.shuffle_block, buffer=cfg.shuffle_buffer,
                             group=source.noisy_per_clean if cfg.group_variants else 1)


def train_batches(source: SplitSource, cfg: DataConfig, seed: int, rank: int = 0,
                  world: int = 1, start: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """Endless training batches for this rank, beginning with the batch of step ``start``.

    Returns an iterator of ``{"noisy", "clean"}`` ``Tensor[B x D x F]`` (cache dtype) plus
    ``"corrupt"`` (windows left out). Batches are drawn by index (:func:`train_sampler`) from
    :func:`pair_dataset` (zarr, local webdataset with checksums), else streamed from the tars
    (:class:`WebDatasetStream`).
    """
    workers = cfg.num_workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = dict(persistent_workers=True, prefetch_factor=cfg.prefetch_factor)
    dataset = None
    if source.storage == "zarr" or not source.remote:
        try:
            dataset = pair_dataset(source, in_flight=cfg.prefetch_factor if workers else 0)
        except CacheDataError as exc:
            log.info("%s", exc)
    if dataset is not None:
        loader = DataLoader(dataset, batch_sampler=train_sampler(source, cfg, seed, rank, world,
                                                                 start),
                            num_workers=workers, collate_fn=_identity, pin_memory=pin_memory,
                            **extra)
    else:
        stream = WebDatasetStream(source, cfg.batch_size, seed,
                                  wds_epoch_batches(source, cfg, world), cfg.shuffle_buffer,
                                  rank, world, start, group=cfg.group_variants)
        loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_identity,
                            pin_memory=pin_memory, **extra)
    return iter(loader)


def val_batches(source: SplitSource, cfg: DataConfig, rank: int = 0,
                world: int = 1) -> Iterator[Batch]:
    """This rank's share of the validation split, in a fixed order, in ``val_batch_size`` batches.

    ``cfg.val_max_windows`` caps the pairs used over all ranks. zarr: the first ``cap`` pairs
    of the split, dealt to ranks round-robin; webdataset: rank ``r`` reads the shards
    ``r::world`` in order and stops after its round-robin share of ``cap`` pairs. An unreadable
    webdataset shard is logged and skipped.
    """
    cap = cfg.val_max_windows
    B = cfg.val_batch_size
    if source.storage == "zarr":
        data = ZarrWindows.of(source)
        pairs = np.arange(len(data))[:cap] if cap else np.arange(len(data))
        mine = pairs[rank::world].tolist()
        for start in range(0, len(mine), B):
            yield data.__getitems__(mine[start:start + B])
        return
    my_cap = None if not cap else len(range(rank, cap, world))
    shards = source.shards[rank::world]
    pending: list[tuple[Path, dict, int]] = []
    seen = 0
    for path, sample in tagged_samples(shards):
        for k in range(source.noisy_per_clean):
            if my_cap is not None and seen >= my_cap:
                break
            pending.append((path, sample, k))
            seen += 1
            if len(pending) == B:
                yield _decode_batch(pending, source)
                pending = []
    if pending:
        yield _decode_batch(pending, source)


def _decode_batch(items: list[tuple[Path, dict, int]], source: SplitSource) -> Batch:
    shape = (source.latent_dim, source.frames)
    return stack_windows([skip_corrupt(decode_sample, sample, path, shape, k)
                          for path, sample, k in items])


# --- exact reads with metadata (tests, benchmarks, tools) -------------------------------------


Window = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _stored_pairs(source: SplitSource, start: int = 0,
                  stop: int | None = None) -> Iterator[tuple[dict[str, np.ndarray], dict]]:
    """Pairs ``start..stop-1`` of ``source`` in split order: ``({"noisy", "clean"}, stored
    metadata of the noisy variant)``; stored metadata is the zarr metadata arrays' values (source
    indices) or the webdataset ``meta.json`` (source paths)."""
    K = source.noisy_per_clean
    stop = source.pairs if stop is None else min(stop, source.pairs)
    if source.storage == "zarr":
        data = ZarrWindows.of(source)
        for p in range(start, stop):
            yield data._read(p), data.read_meta(p)
        return
    shape = (source.latent_dim, source.frames)
    first = 0                                 # pair index of the shard's first pair
    for path, count in zip(source.shards, source.shard_windows):
        if first >= stop:
            return
        if first + count * K > start:
            got = 0
            for j, sample in enumerate(iter_tar_samples(path)):
                got += 1
                for k in range(K):
                    if start <= first + j * K + k < stop:
                        yield (decode_sample(sample, path, shape, k),
                               sample_meta(sample, path, k))
            if got != count:
                raise CacheDataError(f"{path}: holds {got} windows, the manifest says {count}")
        first += count * K


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
    """Training pair ``i`` (0-based, split order, done windows only; with ``K`` noisy variants
    per window, variant ``i % K`` of window ``i // K``) of a split, either storage.

    Returns
    -------
    clean, noisy : ndarray [D x F]
        Cache dtype.
    meta : dict
        The stored :data:`~cleancodec.pipeline.shards.META_FIELDS` (source fields as indices
        into the manifest's ``sources``, ``rir_source`` -1 for dry), ``clean_path`` /
        ``noise_path`` / ``rir_path`` (relative source paths, ``None`` for no RIR) and ``row``
        (:attr:`SplitSource.rows`) of the clean window.
    """
    if not 0 <= i < source.pairs:
        raise IndexError(f"pair {i} of the {source.split!r} split ({source.pairs} pairs)")
    row = int(source.rows[i // source.noisy_per_clean])
    for arrays, stored in _stored_pairs(source, i, i + 1):
        return arrays["clean"], arrays["noisy"], _window_meta(source, stored, row)
    raise CacheDataError(f"{source.split}: window {i} is missing from its shard")


def read_split(source: SplitSource) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Every done window of a split, in order, either storage — for small caches and tests.

    Returns
    -------
    clean : ndarray [n x D x F]
        Cache dtype, one per window.
    noisy : ndarray [n K x D x F]
        Cache dtype, ``K`` noisy variants per window (variant ``k`` of window ``i`` at
        ``i K + k``).
    metas : list of dict
        Per noisy latent, the stored :data:`~cleancodec.pipeline.shards.META_FIELDS` with source
        fields as relative paths (``rir_source`` ``None`` for dry), as in a webdataset
        ``meta.json``.
    """
    clean, noisy, metas = [], [], []
    K = source.noisy_per_clean
    for p, (arrays, stored) in enumerate(_stored_pairs(source)):
        if p % K == 0:
            clean.append(arrays["clean"])
        noisy.append(arrays["noisy"])
        metas.append(_path_meta(source, stored))
    if len(metas) != source.pairs:
        raise CacheDataError(f"{source.split}: read {len(metas)} pairs, the manifest says "
                             f"{source.pairs}")
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
    rng = seeded_rng(seed, TAG_STATS)
    if source.storage == "zarr":
        data = ZarrWindows.of(source)
        picks = np.sort(rng.choice(len(data), size=min(n_windows, len(data)), replace=False))
        for i in picks:
            yield skip_corrupt(data._read, int(i))
        return
    shards = [source.shards[i] for i in rng.permutation(len(source.shards))]
    shape = (source.latent_dim, source.frames)
    n = 0
    for path, sample in tagged_samples(shards):
        for k in range(source.noisy_per_clean):
            if n >= n_windows:
                return
            n += 1
            yield skip_corrupt(decode_sample, sample, path, shape, k)


__all__ = [  # the one reader's API (split description and tar parts live in their own modules)
    "CORRUPT_KEY", "FIELDS", "TRAIN", "VAL", "Batch", "CacheDataError", "EpochBatchSampler",
    "SplitSource", "WebDatasetStream", "Window", "ZarrWindows", "decode_sample",
    "iter_tar_samples", "iter_tar_windows", "latent_stats", "open_split", "read_split",
    "read_window", "train_batches", "val_batches", "wds_epoch_batches", "pair_dataset",
    "train_sampler", "block_shuffle", "MappedWindows",
]

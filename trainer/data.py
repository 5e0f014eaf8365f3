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

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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
        check_finite(out, f"{self.path}: window row {row}")
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
        return stack_windows([skip_corrupt(self._read, i) for i in indices])


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
        perm = seeded_rng(self.seed, TAG_EPOCH, epoch).permutation(self.n)
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
    for item in tagged_samples(shards):
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
    return stack_windows([skip_corrupt(decode_sample, sample, path, shape)
                          for path, sample in items])


# --- exact reads with metadata (tests, benchmarks, tools) -------------------------------------


Window = tuple[np.ndarray, np.ndarray, dict[str, Any]]


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
                    yield decode_sample(sample, path, shape), sample_meta(sample, path)
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
    rng = seeded_rng(seed, TAG_STATS)
    if source.storage == "zarr":
        data = ZarrWindows(source.zarr_path, source.rows)
        picks = np.sort(rng.choice(len(data), size=min(n_windows, len(data)), replace=False))
        for i in picks:
            yield skip_corrupt(data._read, int(i))
        return
    shards = [source.shards[i] for i in rng.permutation(len(source.shards))]
    shape = (source.latent_dim, source.frames)
    for n, (path, sample) in enumerate(tagged_samples(shards)):
        if n >= n_windows:
            return
        yield skip_corrupt(decode_sample, sample, path, shape)


__all__ = [  # the one reader's API (split description and tar parts live in their own modules)
    "CORRUPT_KEY", "FIELDS", "TRAIN", "VAL", "Batch", "CacheDataError", "EpochBatchSampler",
    "SplitSource", "WebDatasetStream", "Window", "ZarrWindows", "decode_sample",
    "iter_tar_samples", "iter_tar_windows", "latent_stats", "open_split", "read_split",
    "read_window", "train_batches", "val_batches", "wds_epoch_batches",
]

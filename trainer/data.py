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

This module holds the loaders and the latent statistics; its parts have their own modules:
:mod:`.cache_split` (a split as the manifest describes it), :mod:`.zarr_windows` (zarr reads
through zarr's codecs), :mod:`.mapped` (indexed byte ranges), :mod:`.tars` (webdataset
streams), :mod:`.sampling` (the seeded, resumable order) and :mod:`.exact_reads` (windows with
their metadata).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cleancodec.pipeline.manifest import ManifestError
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
    open_split,
    seeded_rng,
    skip_corrupt,
    stack_windows,
)
from cleancodec.trainer.config import DataConfig
from cleancodec.trainer.exact_reads import Window, read_split, read_window
from cleancodec.trainer.mapped import MappedWindows, NotMappable, mappable
from cleancodec.trainer.sampling import EpochBatchSampler, block_shuffle
from cleancodec.trainer.tars import (
    WebDatasetStream,
    decode_sample,
    iter_tar_samples,
    iter_tar_windows,
    tagged_samples,
)
from cleancodec.trainer.zarr_windows import ZarrWindows

log = logging.getLogger(__name__)

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


__all__ = [  # the one reader's API (its parts live in the modules named in the docstring)
    "CORRUPT_KEY", "FIELDS", "TAG_EPOCH", "TRAIN", "VAL", "Batch", "CacheDataError",
    "EpochBatchSampler", "MappedWindows", "SplitSource", "WebDatasetStream", "Window",
    "ZarrWindows", "block_shuffle", "decode_sample", "iter_tar_samples", "iter_tar_windows",
    "latent_stats", "open_split", "pair_dataset", "read_split", "read_window", "seeded_rng",
    "train_batches", "train_sampler", "val_batches", "wds_epoch_batches",
]

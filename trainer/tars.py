"""Webdataset tars of the latent cache: samples, their checks, the seeded training stream and
exact reads (the tar side of the one reader, :mod:`cleancodec.trainer.data`).

``<cache>/<split>-%06d.tar`` holds ``{__key__, noisy.npy, clean.npy, meta.json}`` samples;
``.npy`` members decode with ``allow_pickle=False`` and are checked against the crc32 their
``meta.json`` records.
"""
from __future__ import annotations

import io
import json
import logging
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from cleancodec.core import remote
from cleancodec.pipeline.shards import CRC32C_KEY, CRC_KEY, VARIANTS_KEY, noisy_member
from cleancodec.trainer.cache_split import (
    FIELDS,
    TAG_SHARDS,
    TAG_SLOT,
    Batch,
    CacheDataError,
    SplitSource,
    check_finite,
    seeded_rng,
    skip_corrupt,
    stack_windows,
)

log = logging.getLogger(__name__)


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
        stream = remote.open_read(str(path)) if remote.is_url(path) else None
        with tarfile.open(path if stream is None else None, mode="r|*", fileobj=stream) as tf:
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
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise CacheDataError(f"{path}: unreadable webdataset shard ({exc})") from exc
    if current is not None:
        yield current


def decode_sample(sample: dict[str, Any], source: Path | str, shape: tuple[int, int],
                  k: int = 0) -> dict[str, np.ndarray]:
    """``clean.npy`` and noisy variant ``k`` (:func:`~cleancodec.pipeline.shards.noisy_member`)
    bytes → ``{"clean", "noisy"}`` arrays ``[D x F]`` (no pickle), checksums, shape and
    finiteness checked."""
    _check_crc(sample, source)
    out = {}
    for name in FIELDS:
        member = "clean.npy" if name == "clean" else noisy_member(k)
        blob = sample.get(member)
        if blob is None:
            raise CacheDataError(f"{source}: sample {sample['__key__']!r} has no {member}")
        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except ValueError as exc:
            raise CacheDataError(
                f"{source}: sample {sample['__key__']!r}: bad {name}.npy ({exc})") from exc
        if tuple(arr.shape) != shape:
            raise CacheDataError(f"{source}: sample {sample['__key__']!r}: {name} has shape "
                                 f"{tuple(arr.shape)}, the manifest says {shape}")
        out[name] = arr
    check_finite(out, f"{source}: sample {sample['__key__']!r}")
    return out


def _check_crc(sample: dict[str, Any], source: Path) -> None:
    """Compare each ``.npy`` member with the crc32 its ``meta.json`` records (caches written
    before checksums have none: nothing to check)."""
    try:
        meta = json.loads(sample.get("meta.json", b"{}"))
        kind = CRC32C_KEY if CRC32C_KEY in meta else CRC_KEY
        checksum = google_crc32c.value if kind == CRC32C_KEY else zlib.crc32
        recorded = meta.get(kind, {})
    except ValueError as exc:
        raise CacheDataError(f"{source}: sample {sample['__key__']!r} is corrupt: unreadable "
                             f"meta.json ({exc})") from exc
    for member, crc in recorded.items():
        blob = sample.get(member)
        if blob is not None and checksum(blob) != int(crc):
            raise CacheDataError(f"{source}: sample {sample['__key__']!r} is corrupt: {member} "
                                 f"fails its {kind} checksum")


def tagged_samples(shards: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
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
    ``group``: the K noisy variants of a sample follow one another (the buffer shuffles samples,
    ``shuffle_buffer // K`` of them) instead of being shuffled one by one.
    """

    def __init__(self, source: SplitSource, batch_size: int, seed: int, epoch_batches: int,
                 shuffle_buffer: int, rank: int = 0, world: int = 1, start: int = 0,
                 group: bool = False):
        self.group = group
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.epoch_batches, self.shuffle_buffer = epoch_batches, shuffle_buffer
        self.rank, self.world, self.start = rank, world, start
        self.shape = (source.latent_dim, source.frames)

    def _slot_shards(self, epoch: int, slot: int, slots: int, cycle: int) -> list[Path]:
        shards = list(self.source.shards)
        perm = seeded_rng(self.seed, TAG_SHARDS, epoch).permutation(len(shards))
        streams = self.world * slots
        if len(shards) >= streams:
            mine = [shards[i] for i in perm[(self.rank * slots + slot)::streams]]
            if cycle:
                mine = [mine[i] for i in seeded_rng(self.seed, TAG_SHARDS, epoch, cycle, self.rank,
                                               slot).permutation(len(mine))]
            return mine
        pick = seeded_rng(self.seed, TAG_SHARDS, epoch, cycle, self.rank, slot).integers(
            len(shards), size=max(1, len(shards)))
        return [shards[i] for i in pick]

    def _slot_samples(self, epoch: int, slot: int, slots: int) -> Iterator[tuple[Path, dict]]:
        def endless() -> Iterator[tuple[Path, dict]]:
            cycle = 0
            while True:
                got = 0
                for item in tagged_samples(self._slot_shards(epoch, slot, slots, cycle)):
                    got += 1
                    yield item
                if got == 0 and cycle > 0:
                    raise CacheDataError(f"{self.source.shards[0].parent}: no readable "
                                         f"{self.source.split} shard for this stream")
                cycle += 1

        K = self.source.noisy_per_clean

        def pairs(samples: Iterator[tuple[Path, dict]]) -> Iterator[tuple[Path, dict, int]]:
            for path, sample in samples:
                for k in range(K):
                    yield path, sample, k

        rng = seeded_rng(self.seed, TAG_SLOT, epoch, self.rank, slot)
        if self.group and K > 1:
            return pairs(_shuffled(endless(), max(1, self.shuffle_buffer // K), rng))
        return _shuffled(pairs(endless()), self.shuffle_buffer, rng)

    def _batch(self, items: list[tuple[Path, dict, int]]) -> Batch:
        return stack_windows([skip_corrupt(decode_sample, sample, path, self.shape, k)
                              for path, sample, k in items])

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


def sample_meta(sample: dict[str, Any], source: Path | str, k: int = 0) -> dict[str, Any]:
    """The ``meta.json`` of a sample as written (``{}`` when absent), for noisy variant ``k``:
    variant 0's fields are the top level, later variants' are under ``"variants"``."""
    blob = sample.get("meta.json")
    if blob is None:
        return {}
    try:
        meta = json.loads(blob)
    except ValueError as exc:
        raise CacheDataError(
            f"{source}: sample {sample['__key__']!r}: bad meta.json ({exc})") from exc
    variants = meta.pop(VARIANTS_KEY, [])
    if k == 0:
        return meta
    try:
        return {**meta, **variants[k - 1]}
    except (IndexError, TypeError) as exc:
        raise CacheDataError(f"{source}: sample {sample['__key__']!r}: meta.json has no "
                             f"metadata for noisy variant {k}") from exc


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
                   "meta": sample_meta(sample, path)}

"""Exact reads of a latent split with each window's metadata, for tests, benchmarks and tools:
:func:`read_window` (pair ``i``), :func:`read_split` (every pair, in order), on the same zarr and
tar-decoding code the training loaders use (:mod:`cleancodec.trainer.data`)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from cleancodec.pipeline.shards import META_FIELDS, SOURCE_FIELDS
from cleancodec.trainer.cache_split import CacheDataError, SplitSource
from cleancodec.trainer.tars import decode_sample, iter_tar_samples, sample_meta
from cleancodec.trainer.zarr_windows import ZarrWindows

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

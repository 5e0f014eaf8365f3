"""Memory-speed reads of a local cache: each window is one byte range, read with one ``preadv``.

A batch is read with one large read per window, which the kernel copies straight out of the
page cache into the batch, instead of one call per window through zarr's codec pipeline or a
tar stream. Both storages keep their
format (zarr and webdataset read them as before); this module only builds an index of where
each window's bytes are:

- **zarr**, latents stored uncompressed (``cache.compressor=none``, the default): the arrays'
  sharding codec keeps, at the end of each shard file, an index of ``(offset, nbytes)`` per inner
  chunk (one window), itself checked by a crc32c. An inner chunk is the window's little-endian
  bytes followed by their crc32c (zarr's ``crc32c`` codec).
- **webdataset**: the tar headers give each member's offset; a ``.npy`` member's data follows
  its header, and ``meta.json`` records each member's crc32.

Every window read is checked against its checksum and for non-finite values (a failing one is
left out of its batch with a warning naming the file, as everywhere in the reader). Compressed
zarr caches, caches from before the checksums and remote (URL) caches are read by the generic
paths of :mod:`cleancodec.trainer.data` instead; :func:`mappable` says which applies.

Indices are *pairs*: pair ``p`` is noisy variant ``p % K`` of clean window ``p // K`` (``K`` =
``cache.noisy_per_clean``; 1 for older caches).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from cleancodec.pipeline.shards import CRC32C_KEY, CRC_KEY, noisy_member
from cleancodec.trainer.cache_split import (
    CORRUPT_KEY,
    Batch,
    CacheDataError,
    SplitSource,
    has_non_finite,
    skip_corrupt,
)

# zarr v3 sharding (https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed):
# the index is (chunks, 2) little-endian uint64 (offset, nbytes), then its crc32c; an absent
# chunk has offset and nbytes 2**64 - 1.
INDEX_ENTRY_BYTES = 16
CRC_BYTES = 4
MISSING = np.uint64(2**64 - 1)
UNCOMPRESSED_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
OPEN_FILES = 64  # descriptors a process keeps open (least recently used closed first)
NPY_HEADER_PROBE = 4096  # bytes read to parse a .npy header (ours are ~128)


class NotMappable(CacheDataError):
    """The cache is readable, but not as indexed byte ranges (the generic paths read it)."""


def _zarr_layout_ok(array_dir: Path) -> bool:
    """Whether the zarr array at ``array_dir`` stores uncompressed, checksummed windows in
    shards with the index at the end (the layout :func:`window_index` maps)."""
    try:
        meta = json.loads((array_dir / "zarr.json").read_text())
        codecs = meta["codecs"]
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            return False
        conf = codecs[0]["configuration"]
        return (conf["codecs"] == UNCOMPRESSED_CODECS and conf["index_codecs"] ==
                UNCOMPRESSED_CODECS and conf.get("index_location", "end") == "end"
                and meta.get("chunk_key_encoding", {}).get("name") == "default")
    except (OSError, ValueError, KeyError, IndexError):
        return False


def mappable(source: SplitSource) -> bool:
    """Whether ``source`` can be read as indexed byte ranges (a local cache that is a
    webdataset, or a zarr store with uncompressed latents)."""
    if source.remote:
        return False
    if source.storage == "zarr":
        return all(_zarr_layout_ok(source.zarr_path / name) for name in ("clean", "noisy"))
    return True


@dataclass
class WindowIndex:
    """Where each window's bytes are.

    ``files`` are the mapped files; ``clean_file`` / ``clean_offset`` are ``[N]``,
    ``noisy_file`` / ``noisy_offset`` ``[N x K]``; ``*_crc`` the recorded checksum (zlib crc32,
    webdataset, over the whole ``.npy`` member: its ``header`` bytes before the offset, then the
    data) or -1 when the crc32c follows the bytes (zarr). ``nbytes`` is one window's size.
    """

    files: list[Path]
    clean_file: np.ndarray
    clean_offset: np.ndarray
    clean_crc: np.ndarray
    noisy_file: np.ndarray
    noisy_offset: np.ndarray
    noisy_crc: np.ndarray
    nbytes: int
    crc_after: bool  # zarr: crc32c stored after the bytes; webdataset: zlib crc32 recorded
    header: int = 0  # webdataset: bytes of the .npy header before each window's data
    crc32c: bool = False  # webdataset: members checked by crc32c (newer caches), else crc32


def _zarr_shard_index(path: Path, chunks: int) -> np.ndarray:
    """The ``(chunks, 2)`` (offset, nbytes) index at the end of a zarr shard file, checked."""
    size = chunks * INDEX_ENTRY_BYTES
    try:
        with open(path, "rb") as fh:
            fh.seek(-(size + CRC_BYTES), os.SEEK_END)
            raw = fh.read(size + CRC_BYTES)
    except OSError as exc:
        raise CacheDataError(f"{path}: cannot read the shard index ({exc})") from exc
    table = np.frombuffer(raw[:size], dtype="<u8")
    if google_crc32c.value(raw[:size]) != int.from_bytes(raw[size:], "little"):
        raise CacheDataError(f"{path}: the shard index is corrupt: it fails its crc32c checksum; "
                             "rebuild that shard")
    return table.reshape(chunks, 2)


def _zarr_index(source: SplitSource, nbytes: int) -> WindowIndex:
    K = source.noisy_per_clean
    per = source.windows_per_shard
    files: list[Path] = []
    clean_f, clean_o, noisy_f, noisy_o = [], [], [], []
    for shard, count in zip(source.shard_indices, source.shard_windows):
        for name, per_shard, f_out, o_out in (("clean", per, clean_f, clean_o),
                                              ("noisy", per * K, noisy_f, noisy_o)):
            path = source.zarr_path / name / "c" / str(shard) / "0" / "0"
            table = _zarr_shard_index(path, per_shard)[: count * (K if name == "noisy" else 1)]
            if (table[:, 0] == MISSING).any() or (table[:, 1] != nbytes + CRC_BYTES).any():
                raise CacheDataError(f"{path}: the shard index does not list {len(table)} "
                                     f"windows of {nbytes} bytes; rebuild that shard")
            f_out.append(np.full(len(table), len(files), dtype=np.int32))
            o_out.append(table[:, 0].astype(np.int64))
            files.append(path)
    n = source.windows
    return WindowIndex(files, np.concatenate(clean_f), np.concatenate(clean_o),
                       np.full(n, -1, np.int64), np.concatenate(noisy_f).reshape(n, K),
                       np.concatenate(noisy_o).reshape(n, K), np.full((n, K), -1, np.int64),
                       nbytes, crc_after=True)


def _npy_data_offset(head: bytes, where: str, dtype: np.dtype, shape: tuple[int, int]) -> int:
    """Offset of the data inside a ``.npy`` member, after checking its dtype and shape."""
    fp = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(fp)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        got_shape, fortran, got_dtype = read(fp)
    except ValueError as exc:
        raise CacheDataError(f"{where}: bad .npy header ({exc})") from exc
    if tuple(got_shape) != shape or fortran or got_dtype != dtype:
        raise CacheDataError(f"{where}: holds {got_dtype} {tuple(got_shape)}"
                             f"{' (Fortran order)' if fortran else ''}, the manifest says "
                             f"{dtype} {shape}")
    return fp.tell()


def _tar_index(source: SplitSource, nbytes: int) -> WindowIndex:
    K = source.noisy_per_clean
    dtype, shape = np.dtype(source.dtype), (source.latent_dim, source.frames)
    files = list(source.shards)
    clean_f, clean_o, clean_c, noisy_f, noisy_o, noisy_c = [], [], [], [], [], []
    heads: set[int] = set()
    kinds: set[bool] = set()
    for fid, (path, count) in enumerate(zip(source.shards, source.shard_windows)):
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(path, mode="r:") as tf:
                for member in tf.getmembers():
                    if member.isfile():
                        key, _, field = member.name.rsplit("/", 1)[-1].partition(".")
                        samples.setdefault(key, {})[field] = member
                metas = {key: json.loads(tf.extractfile(m["meta.json"]).read())
                         for key, m in samples.items() if "meta.json" in m}
            with open(path, "rb") as fh:
                for key, members in samples.items():
                    meta = metas.get(key, {})
                    crcs = meta.get(CRC32C_KEY) or meta.get(CRC_KEY)
                    kinds.add(CRC32C_KEY in meta)
                    if not crcs:
                        raise NotMappable(f"{path}: sample {key!r} records no checksums (a "
                                          "cache from before them): read as a stream")
                    offsets = []
                    for k in range(-1, K):
                        name = "clean.npy" if k < 0 else noisy_member(k)
                        if name not in members:
                            raise CacheDataError(f"{path}: sample {key!r} has no {name}")
                        fh.seek(members[name].offset_data)
                        start = _npy_data_offset(fh.read(NPY_HEADER_PROBE),
                                                 f"{path}: {key}.{name}", dtype, shape)
                        offsets.append((members[name].offset_data + start,
                                        int(crcs[name]), members[name].size - start))
                    if any(size != nbytes for _, _, size in offsets):
                        raise CacheDataError(f"{path}: sample {key!r} has a member of the wrong "
                                             "size")
                    heads.add(start)
                    clean_f.append(fid)
                    clean_o.append(offsets[0][0])
                    clean_c.append(offsets[0][1])
                    noisy_f.append([fid] * K)
                    noisy_o.append([o for o, _, _ in offsets[1:]])
                    noisy_c.append([c for _, c, _ in offsets[1:]])
        except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as exc:
            raise CacheDataError(f"{path}: unreadable webdataset shard ({exc})") from exc
        if len(samples) != count:
            raise CacheDataError(f"{path}: holds {len(samples)} windows, the manifest says {count}")
    if len(heads) != 1 or len(kinds) != 1:
        raise NotMappable(f"{source.split}: .npy headers of {len(heads)} sizes: read as a stream")
    return WindowIndex(files, np.asarray(clean_f, np.int32), np.asarray(clean_o, np.int64),
                       np.asarray(clean_c, np.int64), np.asarray(noisy_f, np.int32),
                       np.asarray(noisy_o, np.int64), np.asarray(noisy_c, np.int64),
                       nbytes, crc_after=False, header=heads.pop(),
                       crc32c=kinds.pop())


def window_index(source: SplitSource) -> WindowIndex:
    """Index every done window of a local split (see :func:`mappable`).

    Raises
    ------
    CacheDataError
        A shard's index or tar headers are unreadable or disagree with the manifest.
    """
    nbytes = source.latent_dim * source.frames * np.dtype(source.dtype).itemsize
    return _zarr_index(source, nbytes) if source.storage == "zarr" else _tar_index(source, nbytes)


RING = 3  # batches in flight at most: the step's, the prefetched one, the one being read


class BatchRing:
    """Reused output tensors for batches read in this process: writing into memory already
    mapped avoids the page faults of a fresh allocation per batch (which cost more than the copy
    itself). A batch stays valid until ``RING - 1`` more batches were read, which holds for the
    training loop (it keeps the current batch and at most one prefetched)."""

    def __init__(self, size: int = RING):
        self.size = size
        self.slots: list[dict[str, torch.Tensor]] = [{} for _ in range(size)]
        self.turn = 0

    def get(self, n: int, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device | str = "cpu", shared: bool = False) -> dict[str, torch.Tensor]:
        """``{"noisy", "clean"}`` tensors ``[n x *shape]``, the oldest slot reused."""
        self.turn = (self.turn + 1) % self.size
        slot = self.slots[self.turn]
        for name in ("noisy", "clean"):
            t = slot.get(name)
            if t is None or t.shape[0] < n or t.shape[1:] != shape or t.dtype != dtype:
                slot[name] = torch.empty((n, *shape), dtype=dtype, device=device)
                if shared:
                    slot[name].share_memory_()
        return {name: t[:n] for name, t in slot.items()}


class MappedWindows(Dataset):
    """Map-style access to the training pairs of a local split, read as indexed byte ranges.

    ``dataset.__getitems__(pairs)`` (what the DataLoader calls for a batch) returns
    ``{"noisy", "clean"}`` ``Tensor[B x D x F]`` (cache dtype) plus ``"corrupt"``; in a
    DataLoader worker the batch is allocated in shared memory, so handing it to the main process
    copies nothing; in the main process it is written into a :class:`BatchRing`. Each process opens
    the files it reads lazily (at most :data:`OPEN_FILES` at once). Within a batch, a clean
    window shared by several pairs (its K noisy variants) is read once.
    """

    def __init__(self, source: SplitSource, index: WindowIndex | None = None,
                 in_flight: int = 0):
        self.source = source
        self.index = index if index is not None else window_index(source)
        self.K = source.noisy_per_clean
        self.shape = (source.latent_dim, source.frames)
        self.dtype = np.dtype(source.dtype)
        self._fds: tuple[int, OrderedDict[int, int]] = (os.getpid(), OrderedDict())
        self._tail = bytearray(CRC_BYTES)        # zarr: a window's crc32c
        self._head = bytearray(self.index.header)  # webdataset: a member's .npy header
        self._want = self.index.nbytes + (CRC_BYTES if self.index.crc_after else self.index.header)
        self._ring = BatchRing()
        self._worker_ring = BatchRing(in_flight + RING) if in_flight else None

    def __len__(self) -> int:
        return self.source.windows * self.K

    def _fd(self, fid: int) -> int:
        """An open descriptor of file ``fid`` in this process (at most :data:`OPEN_FILES` are
        kept open; the least recently used is closed)."""
        pid = os.getpid()
        if self._fds[0] != pid:  # a DataLoader worker: descriptors of the parent are not ours
            self._fds = (pid, OrderedDict())
        fds = self._fds[1]
        fd = fds.get(fid)
        if fd is not None:
            fds.move_to_end(fid)
            return fd
        path = self.index.files[fid]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise CacheDataError(f"{path}: cannot open the file ({exc.strerror or exc})") from exc
        fds[fid] = fd
        if len(fds) > OPEN_FILES:
            os.close(fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        """Close this process's descriptors (they are also closed when the process ends)."""
        if self._fds[0] == os.getpid():
            for fd in self._fds[1].values():
                os.close(fd)
            self._fds[1].clear()

    def _copy(self, out: np.ndarray, fid: int, offset: int, crc: int, i: int, k: int) -> None:
        """Read one window's bytes into ``out`` (``[D x F]``) with one ``preadv`` and check
        them: the kernel copies straight from the page cache into the batch. ``i`` / ``k``:
        the window and its noisy variant (``k`` < 0: the clean latent), named in errors."""
        idx = self.index
        fid = int(fid)
        raw = out.reshape(-1).view(np.uint8)
        if idx.crc_after:   # zarr: the window, then its crc32c
            parts, start = [raw, self._tail], int(offset)
        else:               # webdataset: the .npy header (covered by the checksum), the window
            parts, start = [self._head, raw], int(offset) - idx.header
        try:
            got = os.preadv(self._fd(fid), parts, start)
        except OSError as exc:
            raise self._error(fid, f"cannot read {self._window(i, k)} "
                              f"({exc.strerror or exc})") from exc
        if got != self._want:
            raise self._error(fid, f"{self._window(i, k)} is corrupt: the file is truncated")
        if idx.crc_after:
            ok = google_crc32c.value(raw) == int.from_bytes(self._tail, "little")
        elif idx.crc32c:
            ok = google_crc32c.extend(google_crc32c.value(bytes(self._head)), raw) == int(crc)
        else:
            ok = zlib.crc32(raw, zlib.crc32(self._head)) == int(crc)
        if not ok:
            kind = "crc32c" if idx.crc_after or idx.crc32c else "crc32"
            raise self._error(fid, f"{self._window(i, k)} is corrupt: its bytes fail their "
                              f"{kind} checksum; rebuild that shard")
        if has_non_finite(out):
            raise self._error(fid, f"{self._window(i, k)} is corrupt: non-finite values")

    def _window(self, i: int, k: int) -> str:
        """Window ``i``'s noisy variant ``k`` (``k`` < 0: its clean latent), for messages."""
        row = int(self.source.rows[i])
        return f"clean window row {row}" if k < 0 else f"noisy window row {row} variant {k}"

    def _error(self, fid: int, message: str) -> CacheDataError:
        return CacheDataError(f"{self.index.files[fid]}: {message}")

    def read_pair(self, p: int, clean: np.ndarray, noisy: np.ndarray) -> bool:
        """Copy pair ``p`` into ``clean`` / ``noisy`` (``[D x F]`` each). Raises CacheDataError
        when a window fails its checks."""
        i, k = divmod(int(p), self.K)
        self.read_clean(i, clean)
        self.read_noisy(i, k, noisy)
        return True

    def _read_pair_into(self, p: int, clean: np.ndarray, noisy: np.ndarray, row: int,
                        seen: dict[int, int]) -> bool:
        """Pair ``p`` into row ``row`` of the batch arrays ``clean`` / ``noisy``
        (``[B x D x F]``). A clean window already read into this batch (the K variants of a
        window share it, and the block shuffle keeps them close) is copied from its row instead
        of being read and checked again."""
        i, k = divmod(int(p), self.K)
        self.read_noisy(i, k, noisy[row])
        if i in seen:
            clean[row] = clean[seen[i]]
        else:
            self.read_clean(i, clean[row])
            seen[i] = row
        return True

    def read_clean(self, i: int, out: np.ndarray) -> None:
        """Copy clean window ``i`` into ``out`` ``[D x F]`` (checked)."""
        idx = self.index
        self._copy(out, idx.clean_file[i], idx.clean_offset[i], idx.clean_crc[i], i, -1)

    def read_noisy(self, i: int, k: int, out: np.ndarray) -> None:
        """Copy noisy variant ``k`` of window ``i`` into ``out`` ``[D x F]`` (checked)."""
        idx = self.index
        self._copy(out, idx.noisy_file[i, k], idx.noisy_offset[i, k], idx.noisy_crc[i, k], i, k)

    def __getitems__(self, pairs: list[int]) -> Batch:
        n = len(pairs)
        dtype = getattr(torch, self.dtype.name)
        if get_worker_info() is not None:  # handed to the main process without a copy
            if self._worker_ring is not None:
                tensors = self._worker_ring.get(n, self.shape, dtype, shared=True)
            else:
                tensors = {name: torch.empty((n, *self.shape), dtype=dtype).share_memory_()
                           for name in ("noisy", "clean")}
        else:
            tensors = self._ring.get(n, self.shape, dtype)
        clean, noisy = (tensors[name].numpy() for name in ("clean", "noisy"))
        good = 0
        seen: dict[int, int] = {}  # clean window -> the row of this batch that holds it
        for p in pairs:
            if skip_corrupt(self._read_pair_into, p, clean, noisy, good, seen):
                good += 1
        if good == 0:
            raise CacheDataError(f"every window of a batch of {n} was corrupt (see the warnings "
                                 "above for the files)")
        batch = {name: t[:good] for name, t in tensors.items()}
        batch[CORRUPT_KEY] = torch.tensor(n - good)
        return batch

    def __getitem__(self, p: int) -> Batch:
        batch = self.__getitems__([p])
        return {name: batch[name][0] for name in ("noisy", "clean")}


__all__ = ["BatchRing", "MappedWindows", "NotMappable", "WindowIndex", "mappable", "window_index"]

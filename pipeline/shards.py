"""Cache storage: zarr v3 (sharding codec) and webdataset tars — the writers.

zarr (``<cache>/<split>.zarr``, one group per split)::

    clean, noisy   (N, D, F)  float16|float32, inner chunk (1, D, F) = one window,
                              shard (windows_per_shard, D, F) = one build shard
    snr_db f4 · level_dbfs f4 · reverb u1 · window_seed u8 · clean_source i4 · noise_source i4
    clean_offset i8 · noise_offset i8 · rir_source i4 (-1: dry) · clipped u1      (N,) each,
                              chunk (windows_per_shard,) = one build shard

Each build shard therefore owns exactly one file per array, so shards are written
independently (by workers or ranks). A shard is first written into a scratch copy of the arrays
(same metadata) in a temp folder under ``<cache>/.tmp/``; its files are then published (fsync +
rename, :mod:`cleancodec.core.atomic`) into place, so a killed build never leaves a
half-written file under a live name.

webdataset (``<cache>/<split>-%06d.tar``, one tar per build shard): samples
``{__key__: "<split>-<shard:06d>-<i:06d>", clean.npy, noisy.npy, meta.json}``; ``.npy`` are
``(D, F)`` arrays of the cache dtype, ``meta.json`` the same fields with source paths as strings.
Tars are written to a temp name (``.<name>.<random>.tmp``) and renamed; member times are fixed
so the bytes are a pure function of the content. Nothing is pickled; the reader loads ``.npy``
with ``allow_pickle=False``.

The one reader of these caches is :mod:`cleancodec.trainer.data` (training loaders, plus
``read_window`` / ``read_split`` / ``iter_tar_windows`` for tests and benchmarks); it imports
this module's constants (``META_FIELDS``, ``SOURCE_FIELDS``), so this module must stay free of
codec imports.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
import zarr

from cleancodec.core.atomic import atomic_dir, atomic_path, publish, temp_dir_beside
from cleancodec.core.hashing import sha256_file

if TYPE_CHECKING:  # types only: this module must not import the build at run time
    from cleancodec.pipeline.plan import Plan
    from cleancodec.pipeline.windows import MixedShard

META_FIELDS: dict[str, str] = {
    "snr_db": "float32",
    "level_dbfs": "float32",
    "reverb": "uint8",
    "window_seed": "uint64",
    "clean_source": "int32",
    "noise_source": "int32",
    "clean_offset": "int64",
    "noise_offset": "int64",
    "rir_source": "int32",
    "clipped": "uint8",
}
SOURCE_FIELDS = {"clean_source": "clean", "noise_source": "noise", "rir_source": "rir"}
LATENT_ARRAYS = ("clean", "noisy")
DTYPES = ("float16", "float32")
COMPRESSORS = ("blosc-zstd", "zstd", "none")
WDS_PATTERN = "{split}-%06d.tar"
TMP_DIR = ".tmp"
TAR_MTIME = 0.0
TAR_OWNER = "cleancodec"
HASH_BLOCK = 1 << 20


@dataclass
class ShardFile:
    """One file of a written shard: path relative to the cache dir, sha256, size."""

    path: str
    sha256: str
    bytes: int


# --- small helpers ---------------------------------------------------------------------------


def combined_sha256(files: list[ShardFile]) -> str:
    """One digest for a shard: sha256 over its files' (path, sha256) in order."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\t{f.sha256}\n".encode())
    return digest.hexdigest()


def _publish_into(src: Path, dst: Path) -> None:
    """Publish staged file ``src`` as ``dst`` (creating ``dst``'s folders, e.g. chunk keys)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    publish(src, dst)


def _stage_dir(cache_dir: Path, name: str) -> Path:
    """A fresh temp folder for staging ``name`` under the cache's scratch folder."""
    return temp_dir_beside(scratch_dir(cache_dir) / name)


def zarr_split_path(cache_dir: str | Path, split: str) -> Path:
    return Path(cache_dir) / f"{split}.zarr"


def wds_shard_path(cache_dir: str | Path, split: str, index: int) -> Path:
    return Path(cache_dir) / (WDS_PATTERN.format(split=split) % index)


def scratch_dir(cache_dir: str | Path) -> Path:
    """Where shards are staged before they are renamed into place."""
    return Path(cache_dir) / TMP_DIR


def _compressors(name: str, level: int) -> list[Any]:
    """The bytes codecs of a latent array's inner chunk (one window): the compressor, then a
    crc32c checksum that zarr checks on every read, so corrupted bytes raise instead of being
    trained on."""
    if name == "blosc-zstd":
        codecs = [zarr.codecs.BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")]
    elif name == "zstd":
        codecs = [zarr.codecs.ZstdCodec(level=level)]
    elif name == "none":
        codecs = []
    else:
        raise ValueError(f"compressor must be one of {COMPRESSORS}, got {name!r}")
    return [*codecs, zarr.codecs.Crc32cCodec()]


# --- zarr writing ----------------------------------------------------------------------------


def create_zarr_split(path: str | Path, windows: int, latent_dim: int, frames: int,
                      windows_per_shard: int, dtype: str = "float16",
                      compressor: str = "none", level: int = 3,
                      attributes: dict[str, Any] | None = None,
                      noisy_per_clean: int = 1) -> Path:
    """Create the empty ``<split>.zarr`` group (metadata only) atomically.

    Arrays: ``clean`` ``(windows, latent_dim, frames)`` and ``noisy`` ``(windows K, latent_dim,
    frames)`` (``K = noisy_per_clean``; variant ``v`` of window ``i`` at row ``i K + v``) with
    inner chunks of one window and shards of one build shard (``windows_per_shard`` clean
    windows, ``K`` times that noisy ones); the :data:`META_FIELDS` arrays ``(windows K,)``, one
    per noisy latent, chunked by build shard. Built in a sibling temp folder, then renamed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    path = Path(path)
    with atomic_dir(path) as tmp:
        group = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w", zarr_format=3,
                                attributes=attributes or {})
        for name in LATENT_ARRAYS:
            k = noisy_per_clean if name == "noisy" else 1
            group.create_array(
                name, shape=(windows * k, latent_dim, frames), dtype=dtype,
                chunks=(1, latent_dim, frames),
                shards=(windows_per_shard * k, latent_dim, frames),
                compressors=_compressors(compressor, level), fill_value=0.0,
                dimension_names=("window", "channel", "frame"))
        for name, meta_dtype in META_FIELDS.items():
            group.create_array(name, shape=(windows * noisy_per_clean,), dtype=meta_dtype,
                               chunks=(windows_per_shard * noisy_per_clean,), fill_value=0,
                               dimension_names=("window",))
    return path


def _array_names() -> tuple[str, ...]:
    return (*LATENT_ARRAYS, *META_FIELDS)


def _writable_every_chunk(array: zarr.Array) -> zarr.Array:
    """The array with ``write_empty_chunks`` on: a shard of all-zero metadata (e.g. no reverb)
    must still produce its file, or it could not be renamed into place and checksummed."""
    return array.with_config({"write_empty_chunks": True})


def write_zarr_shard(cache_dir: str | Path, split: str, shard_index: int,
                     windows_per_shard: int, clean: np.ndarray, noisy: np.ndarray,
                     meta: dict[str, np.ndarray]) -> list[ShardFile]:
    """Write build shard ``shard_index`` of ``split`` and return its files.

    clean: ``[n x D x F]``, noisy ``[n K x D x F]`` in the array dtype, ``n <=
    windows_per_shard`` (only the last shard of a split is short). meta: :data:`META_FIELDS`
    arrays of shape ``[n K]``.
    The shard is staged in a scratch copy of the arrays, then each file is renamed into place.
    """
    cache_dir = Path(cache_dir)
    live = zarr_split_path(cache_dir, split)
    K = len(noisy) // max(1, len(clean))
    data = {"clean": clean, "noisy": noisy, **meta}
    missing = set(_array_names()) - set(data)
    if missing:
        raise ValueError(f"shard metadata lacks {sorted(missing)}")
    moves: list[tuple[Path, Path]] = []
    stage = _stage_dir(cache_dir, f"{split}-{shard_index:06d}")
    try:
        for name in _array_names():
            (stage / name).mkdir(parents=True)
            shutil.copyfile(live / name / "zarr.json", stage / name / "zarr.json")
            array = _writable_every_chunk(
                zarr.open_array(zarr.storage.LocalStore(stage / name), mode="r+"))
            values = np.asarray(data[name], dtype=array.dtype)
            start = shard_index * windows_per_shard * (1 if name == "clean" else K)
            array[start:start + len(values)] = values
            coords = (shard_index,) + (0,) * (array.ndim - 1)
            key = array.metadata.encode_chunk_key(coords)
            moves.append((stage / name / key, live / name / key))
        files = []
        for src, dst in moves:
            digest, size = sha256_file(src), src.stat().st_size
            _publish_into(src, dst)
            files.append(ShardFile(dst.relative_to(cache_dir).as_posix(), digest, size))
        return files
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def set_zarr_attributes(cache_dir: str | Path, split: str, attributes: dict[str, Any]) -> None:
    """Replace the group attributes of ``<split>.zarr`` atomically (a new ``zarr.json`` is
    written aside and renamed in)."""
    cache_dir = Path(cache_dir)
    stage = _stage_dir(cache_dir, f"{split}-attrs")
    try:
        zarr.open_group(zarr.storage.LocalStore(stage), mode="w", zarr_format=3,
                        attributes=attributes)
        _publish_into(stage / "zarr.json", zarr_split_path(cache_dir, split) / "zarr.json")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- webdataset writing ----------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    """``.npy`` serialisation of a plain numeric array (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def wds_key(split: str, shard_index: int, i: int) -> str:
    return f"{split}-{shard_index:06d}-{i:06d}"


CRC_KEY = "crc32"  # meta.json (older caches): zlib.crc32 of each .npy member
CRC32C_KEY = "crc32c"  # meta.json: crc32c of each .npy member (~5x faster), checked on every read
VARIANTS_KEY = "variants"  # meta.json: metadata of noisy variants 1..K-1 (K > 1)


def noisy_member(k: int) -> str:
    """The tar member of noisy variant ``k``: ``noisy.npy`` (variant 0, as in single-noise
    caches), ``noisy.<k>.npy`` after it."""
    return "noisy.npy" if k == 0 else f"noisy.{k}.npy"


def write_wds_shard(cache_dir: str | Path, split: str, shard_index: int, clean: np.ndarray,
                    noisy: np.ndarray, metas: list[dict[str, Any]]) -> ShardFile:
    """Write one webdataset tar (``<split>-<shard:06d>.tar``) and return its file record.

    clean: ``[n x D x F]``, noisy ``[n K x D x F]`` in the cache dtype; metas: ``n K`` JSON-able
    dicts, one per noisy latent. A sample per clean window: ``clean.npy``, its K noisy variants
    (:func:`noisy_member`) and ``meta.json`` (variant 0's fields, later variants' under
    :data:`VARIANTS_KEY`, and the crc32c of its ``.npy`` members, :data:`CRC32C_KEY`).
    Written to a temp name beside it, fsynced, then renamed (:func:`atomic.atomic_path`).
    """
    import webdataset as wds

    cache_dir = Path(cache_dir)
    path = wds_shard_path(cache_dir, split, shard_index)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            writer = wds.TarWriter(fh, user=TAR_OWNER, group=TAR_OWNER, encoder=False,
                                   mtime=TAR_MTIME)
            K = len(noisy) // max(1, len(clean))
            for i in range(len(clean)):
                members = {"clean.npy": npy_bytes(clean[i])}
                members.update({noisy_member(v): npy_bytes(noisy[i * K + v]) for v in range(K)})
                meta = dict(metas[i * K])
                if K > 1:
                    meta[VARIANTS_KEY] = [metas[i * K + v] for v in range(1, K)]
                meta[CRC32C_KEY] = {k: google_crc32c.value(v) for k, v in members.items()}
                writer.write({"__key__": wds_key(split, shard_index, i), **members,
                              "meta.json": json.dumps(meta, sort_keys=True).encode()})
            writer.close()
        digest, size = sha256_file(tmp), tmp.stat().st_size
    return ShardFile(path.relative_to(cache_dir).as_posix(), digest, size)


# --- one build shard -------------------------------------------------------------------------


def _wds_metas(plan: Plan, mixed: MixedShard) -> list[dict[str, Any]]:
    """Per-window ``meta.json`` dicts of a webdataset shard: :data:`META_FIELDS` with source
    indices replaced by their relative paths, plus ``split`` and ``row``."""
    metas = []
    K = plan.noisy_per_clean
    for j in range(mixed.task.windows * K):
        i = j // K
        row = {name: mixed.meta[name][j].item() for name in META_FIELDS}
        row["clean_source"] = plan.clean[row["clean_source"]].rel
        row["noise_source"] = plan.noise[row["noise_source"]].rel
        row["rir_source"] = plan.rir[row["rir_source"]].rel if row["rir_source"] >= 0 else None
        row["split"], row["row"] = mixed.task.split, mixed.task.start + i
        metas.append(row)
    return metas


def write_shard(plan: Plan, cache_dir: Path, mixed: MixedShard,
                latents: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Store one encoded shard in ``plan.storage`` and return its manifest record.

    latents: clean and noisy ``[n x D x F]`` in the cache dtype (``n = mixed.task.windows``).
    """
    task = mixed.task
    clean, noisy = latents
    if plan.storage == "zarr":
        files = write_zarr_shard(cache_dir, task.split, task.index, plan.windows_per_shard,
                                 clean, noisy, mixed.meta)
        main_file = zarr_split_path(cache_dir, task.split).name
    else:
        files = [write_wds_shard(cache_dir, task.split, task.index, clean, noisy,
                                 _wds_metas(plan, mixed))]
        main_file = files[0].path
    return {"index": task.index, "status": "done", "windows": task.windows,
            "sha256": combined_sha256(files), "file": main_file,
            "files": [asdict(f) for f in files],
            "bytes": sum(f.bytes for f in files), "silent_draws": mixed.silent_draws,
            "clipped": int(mixed.meta["clipped"].sum())}

"""trainer.data: both cache formats through the manifest, seeded order, resumable streams."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cleancodec.pipeline.manifest import FORMAT, ManifestError, load_manifest, save_manifest
from cleancodec.trainer.config import DataConfig
from cleancodec.trainer.data import (
    CacheDataError,
    EpochBatchSampler,
    WebDatasetStream,
    iter_tar_samples,
    latent_stats,
    open_split,
    read_split,
    read_window,
    train_batches,
    val_batches,
)

D, F = 8, 12


def synthetic_windows(n: int, seed: int, dim: int = D, frames: int = F,
                      offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)`` float32 ``[n x dim x frames]``; window ``i`` encodes ``offset + i`` in
    ``clean[i, 0, 0]`` so tests can tell windows apart after shuffling."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    freq = rng.uniform(0.05, 0.3, size=(n, dim, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, dim, 1))
    clean = (np.sin(2 * np.pi * freq * t + phase) * rng.uniform(0.5, 2.0, size=(n, dim, 1))
             + rng.normal(0, 0.5, size=(1, dim, 1)) * 3).astype(np.float32)
    clean[:, 0, 0] = offset + np.arange(n)
    noisy = (clean + rng.normal(0, 0.7, size=clean.shape)).astype(np.float32)
    noisy[:, 0, 0] = clean[:, 0, 0]
    return noisy, clean


def write_synthetic_cache(cache: Path, storage: str, shards: dict[str, list[int]],
                          windows_per_shard: int, seed: int = 0, dim: int = D, frames: int = F,
                          dtype: str = "float16", status: dict[tuple[str, int], str] | None = None
                          ) -> dict:
    """A cache in the manifest's documented layout, with synthetic latents.

    ``shards[split]`` lists each shard's window count; ``status`` overrides a shard's status
    (default ``done``). Window ``i`` of a split carries its row number in ``clean[0, 0]``.
    """
    import zarr

    cache.mkdir(parents=True, exist_ok=True)
    status = status or {}
    splits = {}
    for s_i, (split, counts) in enumerate(shards.items()):
        n_rows = len(counts) * windows_per_shard
        noisy, clean = synthetic_windows(n_rows, seed + s_i, dim, frames)
        records = []
        if storage == "zarr":
            group = zarr.open_group(str(cache / f"{split}.zarr"), mode="w")
            arrays = {name: group.create_array(name, shape=(n_rows, dim, frames), dtype=dtype,
                                               chunks=(1, dim, frames),
                                               shards=(windows_per_shard, dim, frames))
                      for name in ("noisy", "clean")}
            group.create_array("snr_db", shape=(n_rows,), dtype="float32", chunks=(n_rows,))
        for idx, count in enumerate(counts):
            lo = idx * windows_per_shard
            rec = {"index": idx, "status": status.get((split, idx), "done"), "windows": count,
                   "sha256": "0" * 64}
            if storage == "zarr":
                arrays["noisy"][lo:lo + count] = noisy[lo:lo + count].astype(dtype)
                arrays["clean"][lo:lo + count] = clean[lo:lo + count].astype(dtype)
                rec["file"] = f"{split}.zarr"
            else:
                name = f"{split}-{idx:06d}.tar"
                with tarfile.open(cache / name, "w") as tf:
                    for row in range(lo, lo + count):
                        key = f"{split}-{row:08d}"
                        for field, arr in (("noisy", noisy[row]), ("clean", clean[row])):
                            buf = io.BytesIO()
                            np.save(buf, arr.astype(dtype), allow_pickle=False)
                            _add(tf, f"{key}.{field}.npy", buf.getvalue())
                        _add(tf, f"{key}.meta.json", json.dumps({"snr_db": 5.0}).encode())
                rec["file"] = name
            records.append(rec)
        info = {"windows": sum(counts), "windows_per_shard": windows_per_shard, "shards": records}
        info.update({"path": f"{split}.zarr"} if storage == "zarr"
                    else {"pattern": f"{split}-%06d.tar"})
        splits[split] = info
    manifest = {
        "format": FORMAT, "format_version": 1, "storage": storage,
        "codec": {"identity": {"kind": "random-init", "seed": 0, "arch_name": "synthetic"},
                  "sample_rate": 16000, "hop_length": 320, "latent_dim": dim, "n_codebooks": 4,
                  "frame_rate": 50.0},
        "window": {"seconds": frames / 50.0, "samples": frames * 320, "frames": frames},
        "dtype": dtype, "seed": seed, "config": {}, "splits": splits, "complete": True,
        "versions": {},
    }
    save_manifest(cache, manifest)
    return manifest


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return [int(round(float(v))) for v in batch["clean"][:, 0, 0]]


def _take(it, n: int) -> list[list[int]]:
    return [_ids(next(it)) for _ in range(n)]


@pytest.fixture(params=["zarr", "webdataset"])
def cache(request, tmp_path) -> tuple[Path, dict]:
    manifest = write_synthetic_cache(tmp_path / request.param, request.param,
                                     {"train": [6, 6, 6, 4], "val": [5, 5]}, windows_per_shard=6)
    return tmp_path / request.param, manifest


def test_open_split_reads_done_shards_only(tmp_path):
    for storage in ("zarr", "webdataset"):
        manifest = write_synthetic_cache(tmp_path / storage, storage,
                                         {"train": [4, 4, 4], "val": [2]}, windows_per_shard=4,
                                         status={("train", 1): "partial"})
        src = open_split(tmp_path / storage, manifest, "train")
        assert src.windows == 8 and src.latent_dim == D and src.frames == F
        if storage == "zarr":
            assert src.rows.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
        else:
            assert [p.name for p in src.shards] == ["train-000000.tar", "train-000002.tar"]
        seen = set()
        for batch in val_batches(src, DataConfig(val_batch_size=3)):
            seen.update(_ids(batch))
        assert seen == {0, 1, 2, 3, 8, 9, 10, 11}


def test_unknown_format_version_is_refused(tmp_path):
    manifest = write_synthetic_cache(tmp_path / "c", "zarr", {"train": [2], "val": [2]}, 2)
    manifest["format_version"] = 99
    save_manifest(tmp_path / "c", manifest)
    with pytest.raises(ManifestError, match="format version 99.*cleancodec cache --out .*"
                                            "--overwrite"):
        load_manifest(tmp_path / "c")


def test_a_version_1_cache_is_read_as_one_noise_per_window(tmp_path):
    manifest = write_synthetic_cache(tmp_path / "c", "zarr", {"train": [4, 4], "val": [2]}, 4)
    assert manifest["format_version"] == 1 and "noisy_per_clean" not in manifest
    src = open_split(tmp_path / "c", load_manifest(tmp_path / "c"), "train")
    clean, noisy, _ = read_split(src)
    assert src.noisy_per_clean == 1 and src.pairs == 8 and len(clean) == len(noisy) == 8
    batch = next(train_batches(src, DataConfig(batch_size=8, num_workers=0), seed=0))
    assert sorted(_ids(batch)) == list(range(8))


def test_split_without_finished_windows_is_an_error(tmp_path):
    manifest = write_synthetic_cache(tmp_path / "c", "zarr", {"train": [2], "val": [2]}, 2,
                                     status={("val", 0): "partial"})
    with pytest.raises(ManifestError, match="'val' split has no finished windows"):
        open_split(tmp_path / "c", manifest, "val")


def test_train_batches_cover_epoch_and_shuffle_across_shards(cache):
    path, manifest = cache
    src = open_split(path, manifest, "train")
    cfg = DataConfig(batch_size=4, num_workers=0, shuffle_buffer=8)
    it = train_batches(src, cfg, seed=3)
    ids = _take(it, 5)                                   # 22 windows → 5 batches of 4
    assert all(len(b) == 4 for b in ids)
    flat = [i for b in ids for i in b]
    if src.storage == "zarr":
        assert len(set(flat)) == 20                      # one epoch: no window twice
    shard_of = [i // 6 for i in ids[0]]
    assert flat != sorted(flat), "order is shuffled"
    assert len(set(shard_of)) > 1 or len(set(i // 6 for i in ids[1])) > 1, "batches mix shards"
    again = _take(train_batches(src, cfg, seed=3), 5)
    other = _take(train_batches(src, cfg, seed=4), 5)
    assert again == ids and other != ids


def test_batches_keep_cache_dtype_and_shape(cache):
    path, manifest = cache
    src = open_split(path, manifest, "train")
    batch = next(train_batches(src, DataConfig(batch_size=3, num_workers=0), seed=0))
    assert batch["noisy"].shape == (3, D, F) and batch["noisy"].dtype == torch.float16


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_at_any_step(cache, workers):
    """The batches from step s on are the same whether the stream started at 0 or at s."""
    path, manifest = cache
    src = open_split(path, manifest, "train")
    cfg = DataConfig(batch_size=3, num_workers=workers, shuffle_buffer=5)
    full = _take(train_batches(src, cfg, seed=1), 16)    # crosses two epoch boundaries
    for start in (5, 7, 14):
        assert _take(train_batches(src, cfg, seed=1, start=start), 16 - start) == full[start:]


def test_ranks_get_disjoint_windows_each_epoch(tmp_path):
    manifest = write_synthetic_cache(tmp_path / "z", "zarr", {"train": [8, 8], "val": [2]}, 8)
    src = open_split(tmp_path / "z", manifest, "train")
    cfg = DataConfig(batch_size=2, num_workers=0)
    r0 = [i for b in _take(train_batches(src, cfg, 0, rank=0, world=2), 4) for i in b]
    r1 = [i for b in _take(train_batches(src, cfg, 0, rank=1, world=2), 4) for i in b]
    assert len(r0) == len(r1) == 8 and not set(r0) & set(r1)
    assert sorted(r0 + r1) == list(range(16))


def test_webdataset_splits_shards_by_node_and_worker(tmp_path):
    manifest = write_synthetic_cache(tmp_path / "w", "webdataset",
                                     {"train": [4] * 8, "val": [2]}, 4)
    src = open_split(tmp_path / "w", manifest, "train")
    stream = WebDatasetStream(src, batch_size=2, seed=0, epoch_batches=2, shuffle_buffer=1,
                              world=2)
    seen = {}
    for rank in (0, 1):
        for slot in (0, 1):
            stream.rank = rank
            seen[rank, slot] = {p.name for p in stream._slot_shards(0, slot, 2, 0)}
    assert all(len(v) == 2 for v in seen.values())
    union = set().union(*seen.values())
    assert len(union) == 8, "each shard goes to exactly one (rank, worker) stream per epoch"


def test_webdataset_epoch_length_is_fixed(tmp_path):
    manifest = write_synthetic_cache(tmp_path / "w", "webdataset", {"train": [5, 3], "val": [2]}, 5)
    src = open_split(tmp_path / "w", manifest, "train")
    stream = WebDatasetStream(src, batch_size=2, seed=0, epoch_batches=3, shuffle_buffer=2)
    it = iter(stream)
    epoch0 = [i for _ in range(3) for i in _ids(next(it))]
    assert len(epoch0) == 6 and set(epoch0) <= set(range(8))


def test_corrupt_webdataset_shard_is_named(tmp_path):
    bad = tmp_path / "train-000000.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(CacheDataError, match="train-000000.tar"):
        list(iter_tar_samples(bad))


def test_sampler_rejects_split_smaller_than_a_batch():
    with pytest.raises(ManifestError, match="fewer than batch_size"):
        EpochBatchSampler(n=5, batch_size=4, seed=0, world=2)


def test_latent_stats_match_numpy(cache):
    path, manifest = cache
    src = open_split(path, manifest, "train")
    mean, std = latent_stats(src, n_windows=10_000, seed=0)   # more than exist: all windows
    rows = list(val_batches(open_split(path, manifest, "train"), DataConfig(val_batch_size=50)))
    allw = torch.cat([torch.cat([b["noisy"], b["clean"]]) for b in rows]).double().numpy()
    ref = allw.transpose(1, 0, 2).reshape(D, -1)
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.numpy(), ref.std(axis=1), rtol=1e-3, atol=1e-4)


def test_exact_reads_match_the_loader_and_skip_unfinished_shards(tmp_path):
    for storage in ("zarr", "webdataset"):
        manifest = write_synthetic_cache(tmp_path / storage, storage,
                                         {"train": [4, 4, 3], "val": [2]}, windows_per_shard=4,
                                         status={("train", 1): "partial"})
        src = open_split(tmp_path / storage, manifest, "train")
        clean, noisy, metas = read_split(src)
        assert clean.shape == (7, D, F) and clean.dtype == np.float16
        assert clean[:, 0, 0].tolist() == [0, 1, 2, 3, 8, 9, 10]
        batches = list(val_batches(src, DataConfig(val_batch_size=7)))
        np.testing.assert_array_equal(batches[0]["noisy"].numpy(), noisy)
        assert [set(m) for m in metas] == [{"snr_db"}] * 7
        c5, n5, meta = read_window(src, 5)
        np.testing.assert_array_equal(c5, clean[5])
        np.testing.assert_array_equal(n5, noisy[5])
        assert meta["row"] == 9
        with pytest.raises(IndexError):
            read_window(src, 7)


def test_corrupted_bytes_in_a_zarr_latent_shard_are_named_as_corrupt(tiny_latent_cache, tmp_path):
    """Caches carry a crc32c per window chunk (pipeline.shards); the reader names a bad one."""
    import os
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_latent_cache("zarr"), cache)
    src = open_split(cache, load_manifest(cache), "train")
    clean_before, noisy_before, _ = read_split(src)
    shard = sorted((cache / "train.zarr" / "noisy" / "c").rglob("*"))
    shard = [p for p in shard if p.is_file()][0]
    data = bytearray(shard.read_bytes())
    data[200:216] = os.urandom(16)  # inside the first window's chunk
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheDataError, match=r"noisy|train\.zarr") as err:
        read_split(src)
    assert "corrupt" in str(err.value) and "crc32c" in str(err.value)
    clean_after, _, _ = read_split(open_split(cache, load_manifest(cache), "val"))
    assert clean_after.shape[0] > 0  # the other split's files are untouched and still read
    assert clean_before.shape == noisy_before.shape


def _corrupt_first_window(path: Path, at: int = 200) -> None:
    import os

    data = bytearray(path.read_bytes())
    data[at:at + 16] = os.urandom(16)
    path.write_bytes(bytes(data))


def _first_chunk_file(cache: Path) -> Path:
    return [p for p in sorted((cache / "train.zarr" / "noisy" / "c").rglob("*")) if p.is_file()][0]


def test_a_corrupt_zarr_window_is_skipped_named_and_counted(tiny_latent_cache, tmp_path, caplog):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_latent_cache("zarr"), cache)
    _corrupt_first_window(_first_chunk_file(cache))
    src = open_split(cache, load_manifest(cache), "train")
    cfg = DataConfig(batch_size=len(src.rows), num_workers=0)   # one batch = the whole epoch
    with caplog.at_level("WARNING"):
        batch = next(train_batches(src, cfg, seed=0))
    assert int(batch["corrupt"]) == 1 and batch["noisy"].shape[0] == len(src.rows) - 1
    assert any("corrupt" in r.message and "train.zarr" in r.message for r in caplog.records)


def test_a_corrupt_webdataset_member_is_skipped_named_and_counted(tiny_latent_cache, tmp_path,
                                                                caplog):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_latent_cache("webdataset"), cache)
    src = open_split(cache, load_manifest(cache), "train")
    tar = src.shards[0]
    with tarfile.open(tar) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("noisy.npy"))
    _corrupt_first_window(tar, at=member.offset_data + 256)   # inside the array's bytes
    cfg = DataConfig(batch_size=8, num_workers=0, val_batch_size=64, val_max_windows=None)
    with caplog.at_level("WARNING"):
        batches = list(val_batches(open_split(cache, load_manifest(cache), "train"), cfg))
    assert sum(int(b["corrupt"]) for b in batches) == 1
    assert sum(b["noisy"].shape[0] for b in batches) == src.windows - 1
    assert any("corrupt" in r.message and "crc32" in r.message and tar.name in r.message
               for r in caplog.records)


def test_non_finite_latents_count_as_corrupt(tmp_path):
    import zarr

    cache = tmp_path / "cache"
    write_synthetic_cache(cache, "zarr", {"train": [6, 6], "val": [6]}, windows_per_shard=6)
    zarr.open_group(str(cache / "train.zarr"), mode="r+")["clean"][3, 2, 5] = np.nan
    src = open_split(cache, load_manifest(cache), "train")
    batch = next(train_batches(src, DataConfig(batch_size=12, num_workers=0), seed=0))
    assert int(batch["corrupt"]) == 1 and 3 not in _ids(batch)


def test_training_stops_when_too_many_windows_are_corrupt(tiny_latent_cache, tmp_path):
    import dataclasses
    import shutil

    from cleancodec.trainer.config import load_train_config
    from cleancodec.trainer.loop import fit

    cache = tmp_path / "cache"
    shutil.copytree(tiny_latent_cache("zarr"), cache)
    for chunk in [p for p in (cache / "train.zarr" / "noisy" / "c").rglob("*") if p.is_file()]:
        _corrupt_first_window(chunk)   # the first window of every shard
    cfg = load_train_config(Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml")
    cfg = dataclasses.replace(cfg, steps=20, progress=False, num_threads=1,
                              data=dataclasses.replace(cfg.data, num_workers=0, batch_size=8,
                                                       max_corrupt_share=0.01))
    with pytest.raises(CacheDataError, match="corrupt, more than train.data.max_corrupt_share"):
        fit(cfg, cache, tmp_path / "run")

"""pipeline.shards: zarr v3 sharded arrays and webdataset tars, written and read back (through
the one cache reader, trainer.data)."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import zarr

from cleancodec.pipeline.manifest import FORMAT, FORMAT_VERSION, load_manifest, save_manifest
from cleancodec.pipeline.shards import (
    META_FIELDS,
    create_zarr_split,
    scratch_dir,
    set_zarr_attributes,
    sha256_file,
    wds_shard_path,
    write_wds_shard,
    write_zarr_shard,
    zarr_split_path,
)
from cleancodec.trainer.data import iter_tar_windows, open_split, read_split, read_window

D, F, WPS, N = 8, 5, 3, 7  # 7 windows in shards of 3: the last shard holds one window


def _latents(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, D, F)).astype(np.float16),
            rng.standard_normal((n, D, F)).astype(np.float16))


def _meta(start: int, n: int) -> dict[str, np.ndarray]:
    rows = np.arange(start, start + n)
    return {name: (rows * 3 + i).astype(dtype)
            for i, (name, dtype) in enumerate(META_FIELDS.items())}


def _manifest(storage: str, done: list[int], sources: int = 40) -> dict:
    shards = [{"index": i, "status": "done" if i in done else "pending",
               "windows": min(WPS, N - i * WPS)} for i in range(3)]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "storage": storage,
            "codec": {"latent_dim": D}, "window": {"frames": F}, "dtype": "float16",
            "sources": {k: [f"{k}/{i}.wav" for i in range(sources)]
                        for k in ("clean", "noise", "rir")},
            "splits": {"train": {"windows": N, "windows_per_shard": WPS, "shards": shards}}}


def _write_all_zarr(cache, order=(2, 0, 1)):
    create_zarr_split(zarr_split_path(cache, "train"), N, D, F, WPS)
    written = {}
    for s in order:
        n = min(WPS, N - s * WPS)
        clean, noisy = _latents(s, n)
        files = write_zarr_shard(cache, "train", s, WPS, clean, noisy, _meta(s * WPS, n))
        written[s] = (clean, noisy, files)
    return written


def test_zarr_layout_uses_the_sharding_codec(tmp_path):
    _write_all_zarr(tmp_path)
    group = zarr.open_group(str(zarr_split_path(tmp_path, "train")), mode="r")
    clean = group["clean"]
    assert clean.shape == (N, D, F) and clean.dtype == np.float16
    assert clean.chunks == (1, D, F) and clean.shards == (WPS, D, F)
    assert group["window_seed"].dtype == np.uint64 and group["window_seed"].shape == (N,)
    assert group["snr_db"].chunks == (WPS,)
    chunk_dir = zarr_split_path(tmp_path, "train") / "clean" / "c"
    shard_files = sorted(p.name for p in chunk_dir.iterdir())
    assert shard_files == ["0", "1", "2"]  # one file per build shard


def test_zarr_shards_round_trip_out_of_order_and_leave_no_scratch(tmp_path):
    written = _write_all_zarr(tmp_path)
    group = zarr.open_group(str(zarr_split_path(tmp_path, "train")), mode="r")
    for s, (clean, noisy, files) in written.items():
        rows = slice(s * WPS, s * WPS + len(clean))
        np.testing.assert_array_equal(group["clean"][rows], clean)
        np.testing.assert_array_equal(group["noisy"][rows], noisy)
        np.testing.assert_array_equal(group["clipped"][rows], _meta(s * WPS, len(clean))["clipped"])
        assert len(files) == 2 + len(META_FIELDS)
        for f in files:
            assert sha256_file(tmp_path / f.path) == f.sha256
            assert (tmp_path / f.path).stat().st_size == f.bytes
    assert list(scratch_dir(tmp_path).iterdir()) == []


def test_zarr_shard_bytes_are_a_function_of_content(tmp_path):
    a = _write_all_zarr(tmp_path / "a")
    b = _write_all_zarr(tmp_path / "b", order=(0, 1, 2))
    for s in range(3):
        assert [f.sha256 for f in a[s][2]] == [f.sha256 for f in b[s][2]]


def test_zero_metadata_still_writes_every_file(tmp_path):
    create_zarr_split(zarr_split_path(tmp_path, "train"), N, D, F, WPS)
    clean, noisy = _latents(0, WPS)
    zeros = {name: np.zeros(WPS, dtype=dtype) for name, dtype in META_FIELDS.items()}
    files = write_zarr_shard(tmp_path, "train", 0, WPS, clean, noisy, zeros)
    assert all((tmp_path / f.path).is_file() for f in files)
    with pytest.raises(ValueError, match="lacks"):
        write_zarr_shard(tmp_path, "train", 1, WPS, clean, noisy, {"snr_db": zeros["snr_db"]})


def test_reader_serves_done_shards_only(tmp_path):
    written = _write_all_zarr(tmp_path)
    manifest = _manifest("zarr", done=[0, 2])
    save_manifest(tmp_path, manifest)
    reader = open_split(tmp_path, load_manifest(tmp_path), "train")
    assert reader.windows == WPS + 1
    assert list(reader.rows) == [0, 1, 2, 6]
    clean, noisy, meta = read_window(reader, 3)
    np.testing.assert_array_equal(clean, written[2][0][0])
    np.testing.assert_array_equal(noisy, written[2][1][0])
    assert meta["row"] == 6 and meta["window_seed"] == int(_meta(6, 1)["window_seed"][0])
    assert meta["clean_path"] == f"clean/{int(_meta(6, 1)['clean_source'][0])}.wav"
    all_clean, _, metas = read_split(reader)
    assert all_clean.shape == (4, D, F)
    assert metas[3]["clean_source"] == meta["clean_path"]


def test_group_attributes_replaced_atomically(tmp_path):
    _write_all_zarr(tmp_path)
    set_zarr_attributes(tmp_path, "train", {"manifest": {"complete": True}})
    group = zarr.open_group(str(zarr_split_path(tmp_path, "train")), mode="r")
    assert group.attrs["manifest"] == {"complete": True}
    assert set(group.array_keys()) == {"clean", "noisy", *META_FIELDS}


def _wds_metas(start: int, n: int) -> list[dict]:
    return [{"snr_db": float(i), "clean_source": f"spk/{i}.wav", "window_seed": 2**63 + i}
            for i in range(start, start + n)]


def test_webdataset_tar_round_trip_without_pickle(tmp_path):
    clean, noisy = _latents(1, WPS)
    f = write_wds_shard(tmp_path, "train", 4, clean, noisy, _wds_metas(12, WPS))
    path = wds_shard_path(tmp_path, "train", 4)
    assert path.name == "train-000004.tar" and f.path == path.name
    assert sha256_file(path) == f.sha256
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert names[:3] == ["train-000004-000000.clean.npy", "train-000004-000000.meta.json",
                             "train-000004-000000.noisy.npy"]
        raw = tar.extractfile(names[0]).read()
        np.load(io.BytesIO(raw), allow_pickle=False)  # plain .npy: loads without pickle
        assert json.loads(tar.extractfile(names[1]).read())["window_seed"] == 2**63 + 12
    samples = list(iter_tar_windows([path], (D, F)))
    assert [s["key"] for s in samples] == [f"train-000004-{i:06d}" for i in range(WPS)]
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(s["clean"], clean[i])
        np.testing.assert_array_equal(s["noisy"], noisy[i])
        assert s["clean"].dtype == np.float16 and s["meta"]["clean_source"] == f"spk/{12 + i}.wav"
    assert not list(tmp_path.glob(".*partial"))


def test_webdataset_tar_is_byte_deterministic(tmp_path):
    clean, noisy = _latents(2, 2)
    digests = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        digests.append(write_wds_shard(tmp_path / name, "val", 0, clean, noisy,
                                       _wds_metas(0, 2)).sha256)
    assert digests[0] == digests[1]


def test_read_split_for_webdataset_uses_done_tars(tmp_path):
    tars = {}
    for s in range(3):
        n = min(WPS, N - s * WPS)
        tars[s] = _latents(10 + s, n)
        write_wds_shard(tmp_path, "train", s, *tars[s], _wds_metas(s * WPS, n))
    save_manifest(tmp_path, _manifest("webdataset", done=[1, 2]))
    clean, noisy, metas = read_split(open_split(tmp_path, load_manifest(tmp_path), "train"))
    np.testing.assert_array_equal(clean, np.concatenate([tars[1][0], tars[2][0]]))
    np.testing.assert_array_equal(noisy, np.concatenate([tars[1][1], tars[2][1]]))
    assert [m["snr_db"] for m in metas] == [3.0, 4.0, 5.0, 6.0]

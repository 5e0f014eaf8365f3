"""The memory-speed data path: byte-range reads, K noisy variants per clean window, resident
mode, exact resume, caches served over HTTP and S3 from 127.0.0.1."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cleancodec.core.topology import Topology
from cleancodec.pipeline.manifest import load_manifest
from cleancodec.trainer.cache_split import has_non_finite
from cleancodec.trainer.config import DataConfig
from cleancodec.trainer.data import (
    MappedWindows,
    ZarrWindows,
    open_split,
    pair_dataset,
    read_split,
    train_batches,
    train_sampler,
)
from cleancodec.trainer.feed import ResidentSplit, choose_resident, resident_batches
from tests.helpers import tiny_cfg

K = 2
SMALL = (32, 8)  # train / val clean windows of the K-variant caches


def _take(it, n):
    return [{k: v.clone() for k, v in next(it).items()} for _ in range(n)]


@pytest.fixture(params=["zarr", "webdataset"])
def k_cache(request, tiny_latent_cache) -> Path:
    return tiny_latent_cache(request.param, *SMALL, noisy_per_clean=K)


def test_default_cache_is_read_as_memory_mapped_ranges_equal_to_zarr(tiny_latent_cache):
    cache = tiny_latent_cache("zarr")
    src = open_split(cache, load_manifest(cache), "train")
    data = pair_dataset(src)
    assert isinstance(data, MappedWindows)
    pairs = [5, 0, 77, 31]
    got = data.__getitems__(pairs)
    ref = ZarrWindows.of(src).__getitems__(pairs)
    for name in ("clean", "noisy"):
        assert torch.equal(got[name], ref[name])
    assert int(got["corrupt"]) == 0


def test_variants_share_the_clean_latent_and_differ_in_noisy(k_cache):
    m = load_manifest(k_cache)
    assert m["noisy_per_clean"] == K and m["format_version"] == 2
    src = open_split(k_cache, m, "train")
    clean, noisy, metas = read_split(src)
    assert len(clean) == SMALL[0] and len(noisy) == K * SMALL[0] == len(metas) == src.pairs
    for i in range(len(clean)):
        a, b = metas[i * K], metas[i * K + 1]
        assert a["clean_source"] == b["clean_source"] and a["clean_offset"] == b["clean_offset"]
        assert a["window_seed"] == b["window_seed"]
        assert (a["noise_source"], a["noise_offset"], a["snr_db"]) != \
               (b["noise_source"], b["noise_offset"], b["snr_db"])
        assert not np.array_equal(noisy[i * K], noisy[i * K + 1])


def test_variant_zero_is_the_single_noise_cache(tiny_latent_cache):
    one = tiny_latent_cache("zarr", *SMALL, noisy_per_clean=1)
    two = tiny_latent_cache("zarr", *SMALL, noisy_per_clean=K)
    c1, n1, _ = read_split(open_split(one, load_manifest(one), "train"))
    c2, n2, metas = read_split(open_split(two, load_manifest(two), "train"))
    # the clip guard lowers the shared gain of a window when any variant would clip
    same = np.array([not metas[i * K]["clipped"] for i in range(len(c2))])
    assert same.sum() >= len(c2) // 2
    np.testing.assert_array_equal(c1[same], c2[same])          # one clean latent per window
    np.testing.assert_array_equal(n1[same], n2[::K][same])     # variant 0 = the K = 1 noisy


def test_an_epoch_covers_every_pair_once_with_its_own_clean(k_cache):
    src = open_split(k_cache, load_manifest(k_cache), "train")
    clean, noisy, _ = read_split(src)
    cfg = DataConfig(batch_size=8, num_workers=0, resident="off")
    batches = _take(train_batches(src, cfg, seed=3), src.pairs // 8)
    seen = []
    for b in batches:
        for c, n in zip(b["clean"].numpy(), b["noisy"].numpy()):
            p = int(np.flatnonzero((noisy == n).all(axis=(1, 2)))[0])
            assert np.array_equal(c, clean[p // K])
            seen.append(p)
    assert sorted(seen) == list(range(src.pairs))


def test_grouped_batches_hold_every_variant_of_their_clean_windows(k_cache):
    src = open_split(k_cache, load_manifest(k_cache), "train")
    cfg = DataConfig(batch_size=8, num_workers=0, resident="off")
    assert cfg.group_variants
    sampler = train_sampler(src, cfg, seed=5)
    epoch = [p for _, b in zip(range(sampler.batches_per_epoch), iter(sampler)) for p in b]
    assert sorted(epoch) == list(range(src.pairs)), "an epoch still covers every pair once"
    for start in range(0, len(epoch), 8):
        windows = [p // K for p in epoch[start:start + 8]]
        assert all(windows.count(w) == K for w in windows), "a batch holds whole windows"
    spread = train_sampler(src, DataConfig(batch_size=8, group_variants=False), seed=5)
    mixed = [p for _, b in zip(range(spread.batches_per_epoch), iter(spread)) for p in b]
    assert sorted(mixed) == sorted(epoch) and mixed != epoch
    assert any(len({p // K for p in mixed[s:s + 8]}) > 8 // K for s in range(0, len(mixed), 8))


def test_grouped_order_is_dealt_to_ranks_by_window_and_resumes():
    from cleancodec.trainer.data import EpochBatchSampler

    ranks = [EpochBatchSampler(96, 8, seed=1, rank=r, world=2, block=8, buffer=32, group=4)
             for r in (0, 1)]
    epochs = [s.epoch_indices(0) for s in ranks]
    assert sorted(np.concatenate(epochs).tolist()) == list(range(96))
    assert not {p // 4 for p in epochs[0]} & {p // 4 for p in epochs[1]}
    it = iter(ranks[0])
    whole = [next(it) for _ in range(9)]
    later = EpochBatchSampler(96, 8, seed=1, rank=0, world=2, block=8, buffer=32, group=4,
                              start=4)
    assert [b for _, b in zip(range(5), iter(later))] == whole[4:]
    # group 1 is the order of block_shuffle over pairs, as before grouping existed
    from cleancodec.trainer.data import TAG_EPOCH, block_shuffle, seeded_rng

    plain = EpochBatchSampler(96, 8, seed=1, block=8, buffer=32)
    assert np.array_equal(plain.epoch_indices(2),
                          block_shuffle(96, seeded_rng(1, TAG_EPOCH, 2), 8, 32))


def test_a_grouped_webdataset_stream_keeps_variants_together(tiny_latent_cache):
    from cleancodec.trainer.tars import WebDatasetStream

    cache = tiny_latent_cache("webdataset", *SMALL, noisy_per_clean=K)
    src = open_split(cache, load_manifest(cache), "train")
    stream = WebDatasetStream(src, batch_size=8, seed=0, epoch_batches=2, shuffle_buffer=16,
                              group=True)
    samples = stream._slot_samples(0, 0, 1)
    items = [next(samples) for _ in range(4 * K)]
    for i in range(0, len(items), K):
        keys = {item[1]["__key__"] for item in items[i:i + K]}
        assert len(keys) == 1 and [item[2] for item in items[i:i + K]] == list(range(K))


@pytest.mark.parametrize("workers", [0, 2])
def test_mapped_reader_resumes_exactly_with_variants(k_cache, workers):
    src = open_split(k_cache, load_manifest(k_cache), "train")
    cfg = DataConfig(batch_size=4, num_workers=workers, resident="off")
    whole = _take(train_batches(src, cfg, seed=9), 12)
    resumed = _take(train_batches(src, cfg, seed=9, start=7), 5)
    for a, b in zip(whole[7:], resumed):
        assert torch.equal(a["noisy"], b["noisy"]) and torch.equal(a["clean"], b["clean"])


def test_resident_and_streaming_give_identical_batches(k_cache):
    src = open_split(k_cache, load_manifest(k_cache), "train")
    cfg = DataConfig(batch_size=8, num_workers=0, resident="off")
    streamed = _take(train_batches(src, cfg, seed=1, start=2), 6)
    split = ResidentSplit(src, torch.device("cpu"))
    resident = _take(resident_batches(split, iter(train_sampler(src, cfg, 1, start=2))), 6)
    for a, b in zip(streamed, resident):
        for name in ("noisy", "clean"):
            assert torch.equal(a[name], b[name])


def test_resident_auto_explains_its_choice(tiny_latent_cache):
    cache = tiny_latent_cache("zarr")
    src = open_split(cache, load_manifest(cache), "train")
    env = Topology()
    choice, why = choose_resident(DataConfig(), src, env)
    assert choice == "ram" and "GB" in why
    assert choose_resident(DataConfig(resident="off"), src, env)[0] == "off"
    choice, why = choose_resident(DataConfig(resident_share=1e-9), src, env)
    assert choice == "off" and "streaming" in why
    with pytest.raises(Exception, match="resident=gpu"):
        choose_resident(DataConfig(resident="gpu"), src, env)


def test_a_corrupt_window_is_left_out_of_resident_batches(tiny_latent_cache, tmp_path, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_latent_cache("zarr"), cache)
    shard = cache / "train.zarr" / "clean" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100:116] = bytes(16)   # inside the first window's bytes
    shard.write_bytes(bytes(data))
    src = open_split(cache, load_manifest(cache), "train")
    with caplog.at_level("WARNING"):
        split = ResidentSplit(src, torch.device("cpu"))
    assert any("corrupt" in r.message and "train.zarr" in r.message for r in caplog.records)
    batch = split.batch(list(range(src.pairs)))
    assert int(batch["corrupt"]) == 1 and len(batch["noisy"]) == src.pairs - 1


def test_a_batch_reads_a_shared_clean_window_once_and_equals_the_cache(k_cache, tmp_path,
                                                                       caplog):
    src = open_split(k_cache, load_manifest(k_cache), "train")
    clean, noisy, _ = read_split(src)
    pairs = [0, 1, 5, 4, 2 * K + 1, 2 * K]   # the K variants of windows 0, 2 and 2, side by side
    data = MappedWindows(src)
    batch = data.__getitems__(pairs)
    for row, p in enumerate(pairs):
        assert np.array_equal(batch["clean"][row].numpy(), clean[p // K])
        assert np.array_equal(batch["noisy"][row].numpy(), noisy[p])
    # window 0's clean latent broken on disk: both of its pairs are left out, the rest read
    cache = tmp_path / "cache"
    shutil.copytree(k_cache, cache)
    broken = open_split(cache, load_manifest(cache), "train")
    data = MappedWindows(broken)
    idx = data.index
    path, at = idx.files[idx.clean_file[0]], int(idx.clean_offset[0])
    with open(path, "r+b") as fh:
        fh.seek(at + 100)
        fh.write(bytes(16))
    with caplog.at_level("WARNING"):
        batch = data.__getitems__(pairs)
    assert int(batch["corrupt"]) == 2 and len(batch["clean"]) == len(pairs) - 2
    assert all("corrupt" in r.message and str(path) in r.message for r in caplog.records)
    for row, p in enumerate(pairs[2:]):
        assert np.array_equal(batch["clean"][row].numpy(), clean[p // K])


def test_a_file_truncated_after_indexing_is_named(tiny_latent_cache, tmp_path, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_latent_cache("webdataset"), cache)
    src = open_split(cache, load_manifest(cache), "train")
    data = MappedWindows(src)
    last = len(src.rows) - 1
    path = data.index.files[data.index.clean_file[last]]
    with open(path, "r+b") as fh:
        fh.truncate(int(data.index.clean_offset[last]) + 10)
    with caplog.at_level("WARNING"):
        batch = data.__getitems__([0, last])
    assert int(batch["corrupt"]) == 1
    assert any("truncated" in r.message and str(path) in r.message for r in caplog.records)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_the_non_finite_check_agrees_with_isfinite(dtype):
    finite = np.linspace(-3, 3, 301).astype(dtype)
    if dtype == "float16":   # every bit pattern, one at a time among finite values
        values = np.arange(2**16, dtype=np.uint16).view(np.float16)
    else:
        info = np.finfo(np.float32)
        values = np.array([np.inf, -np.inf, np.nan, -np.nan, info.max, -info.max, info.tiny,
                           -info.tiny, 0.0, -0.0, 1e-45, -1e-45], dtype=np.float32)
        values = np.concatenate([values, np.uint32([0x7F800001, 0xFFFFFFFF, 0x7FC00000,
                                                    0x7F7FFFFF, 0xFF7FFFFF]).view(np.float32)])
    for v in values:
        arr = finite.copy()
        arr[150] = v
        assert has_non_finite(arr) == (not np.isfinite(v)), (dtype, v)
    assert not has_non_finite(finite)
    assert has_non_finite(np.array([[1.0, np.nan]], dtype=dtype).T)   # not contiguous


# --- caches on a server at 127.0.0.1 -----------------------------------------------------------


@contextlib.contextmanager
def serve(folder: Path):
    """A static HTTP server for ``folder`` on 127.0.0.1 (an ephemeral port) in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP range requests (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), as
    object stores and web servers serve them (zarr reads shard indexes and chunks by range)."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        first, _, last = spec[len("bytes="):].partition("-")
        if first == "":
            start, end = max(0, len(data) - int(last)), len(data) - 1
        else:
            start, end = int(first), min(len(data) - 1, int(last) if last else len(data) - 1)
        body = data[start:end + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["zarr", "webdataset"])
def test_training_from_a_cache_served_over_http(tiny_latent_cache, tmp_path, storage):
    from cleancodec.trainer.loop import fit

    cache = tiny_latent_cache(storage, *SMALL, noisy_per_clean=K)
    with serve(cache) as url:
        src = open_split(url + "/", load_manifest(url + "/"), "train")
        assert src.remote and src.pairs == K * SMALL[0]
        local = read_split(open_split(cache, load_manifest(cache), "train"))
        remote_split = read_split(src)
        np.testing.assert_array_equal(local[1], remote_split[1])
        result = fit(tiny_cfg(steps=3, log_every=1, val_every=3, checkpoint_every=3,
                              milestones=[]), url + "/", tmp_path / "run")
    assert result["step"] == 3 and (tmp_path / "run" / "latest.pt").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cache_dir"] == url + "/"


def test_a_missing_http_cache_is_named(tmp_path):
    from cleancodec.pipeline.manifest import ManifestError

    with serve(tmp_path) as url:
        with pytest.raises(ManifestError, match="127.0.0.1.*manifest.json"):
            load_manifest(url)


@pytest.mark.slow
def test_cache_built_into_s3_and_trained_from_it(tiny_latent_cache, tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    from cleancodec.core import remote
    from cleancodec.pipeline.manifest import MANIFEST_NAME
    from cleancodec.trainer.loop import fit

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="caches")
        import fsspec

        fsspec.config.conf.pop("s3", None)
        built = tiny_latent_cache("zarr", *SMALL, noisy_per_clean=K)
        url = "s3://caches/tiny"
        n = remote.upload_tree(built, url, MANIFEST_NAME)
        assert n == len(remote.cache_files(built, MANIFEST_NAME)) + 1
        src = open_split(url, load_manifest(url), "train")
        np.testing.assert_array_equal(read_split(src)[0], read_split(
            open_split(built, load_manifest(built), "train"))[0])
        result = fit(tiny_cfg(steps=2, log_every=1, val_every=2, checkpoint_every=2,
                              milestones=[]), url, tmp_path / "run")
        assert result["step"] == 2
    finally:
        server.stop()


def test_read_only_locations_are_refused_for_writing():
    from cleancodec.core import remote

    for url in ("http://127.0.0.1:1/cache", "pipe:cat {}"):
        with pytest.raises(remote.RemoteError, match="read-only"):
            remote.check_writable(url)

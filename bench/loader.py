"""Cache reader throughput: windows/s and GB/s a training loop gets, per format and mode.

Side by side in one run, warm page cache, batch 64, DAC-16k window shapes (1024 x 150 float16;
one training pair = clean + noisy = 614 KB). Synthetic latents (random normal; real latents
compress a little better, see the compression row) written by the cache's own writers.

Rows: each format x {0, 2 DataLoader workers} x {streaming, resident}, for caches with one noisy
latent per clean window (K = 1) and with the default K (``cache.noisy_per_clean``; the K
variants of a window share its clean latent, which a batch reads once: by default a batch holds
all K variants of its windows, ``train.data.group_variants``, and a row with the variants spread
over batches shows what that buys); the previous reader
(zarr through its codec pipeline with blosc-zstd compression, one call per window; webdataset
decoded from a tar stream, both K = 1) kept here as a baseline; and the single-core memcpy
ceiling (one batch, 39 MB, as the goal defines it), beside a memcpy of a buffer the size of the
cache (what copies out of the page cache can reach). Each cache is read whole right before each
pass: the memory manager of the benchmark machine pages out page-cache pages left unread for
about a minute, so caches warmed only once at the start were partly read from disk again.

    python bench/loader.py                 # ~5 minutes on 2 cores, appends to BENCHMARKS.md
    python bench/loader.py --windows 256 --no-append   # quick look
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, git_commit, publish  # noqa: E402

from cleancodec.pipeline.cache_config import CacheConfig  # noqa: E402
from cleancodec.pipeline.manifest import (  # noqa: E402
    FORMAT,
    FORMAT_VERSION,
    load_manifest,
    save_manifest,
)
from cleancodec.pipeline.shards import (  # noqa: E402
    META_FIELDS,
    create_zarr_split,
    write_wds_shard,
    write_zarr_shard,
)
from cleancodec.trainer.config import DataConfig  # noqa: E402
from cleancodec.trainer.data import (  # noqa: E402
    EpochBatchSampler,
    WebDatasetStream,
    ZarrWindows,
    open_split,
    train_batches,
    train_sampler,
    wds_epoch_batches,
)
from cleancodec.trainer.feed import ResidentSplit, resident_batches  # noqa: E402

D, F, DTYPE = 1024, 150, "float16"
PAIR_BYTES = 2 * D * F * np.dtype(DTYPE).itemsize
BATCH = 64
WINDOWS_PER_SHARD = 64
SEED = 0
GOAL_VS_PREVIOUS = 10.0
GOAL_MEMCPY_SHARE = 0.40
GOAL_RESIDENT = 20_000
PASSES = 2  # each row: the better of this many passes (the machine is shared)
DEMO_CACHE = Path(__file__).resolve().parents[1] / "data" / "demo_cache_random"


def write_cache(root: Path, storage: str, pairs: int, compressor: str = "none",
                K: int = 1) -> Path:
    """A train split of ``pairs`` synthetic training pairs (``pairs / K`` clean windows with
    ``K`` noisy latents each), built with the cache's writers."""
    rng = np.random.default_rng(SEED)
    windows = pairs // K
    per_shard = max(1, WINDOWS_PER_SHARD // K)  # shards of WINDOWS_PER_SHARD pairs
    shards = []
    if storage == "zarr":
        create_zarr_split(root / "train.zarr", windows, D, F, per_shard, DTYPE,
                          compressor=compressor, noisy_per_clean=K)
    for index, start in enumerate(range(0, windows, per_shard)):
        n = min(per_shard, windows - start)
        clean = rng.standard_normal((n, D, F)).astype(DTYPE)
        noisy = (np.repeat(clean, K, axis=0) + rng.standard_normal((n * K, D, F))).astype(DTYPE)
        meta = {k: np.zeros(n * K, dtype=v) for k, v in META_FIELDS.items()}
        if storage == "zarr":
            write_zarr_shard(root, "train", index, per_shard, clean, noisy, meta)
            name = "train.zarr"
        else:
            name = write_wds_shard(root, "train", index, clean, noisy,
                                   [{"row": start + i // K} for i in range(n * K)]).path
        shards.append({"index": index, "status": "done", "windows": n, "file": name})
    info = {"windows": windows, "windows_per_shard": per_shard, "shards": shards}
    info.update({"path": "train.zarr"} if storage == "zarr" else {"pattern": "train-%06d.tar"})
    save_manifest(root, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "storage": storage,
        "noisy_per_clean": K, "codec": {"identity": {"kind": "synthetic"}, "latent_dim": D},
        "window": {"frames": F}, "dtype": DTYPE, "splits": {"train": info}, "complete": True})
    return root


def warm(root: Path) -> int:
    """Read every file once (warm page cache); returns the bytes."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def rate(batches: Iterator[dict], n_batches: int, warmup: int = 3) -> float:
    """Windows/s of ``n_batches`` batches after ``warmup`` (clean + noisy each)."""
    for _ in range(warmup):
        next(batches)
    count, start = 0, time.perf_counter()
    for _ in range(n_batches):
        count += len(next(batches)["noisy"])
    return count / (time.perf_counter() - start)


def previous_reader(root: Path, workers: int) -> Iterator[dict]:
    """The reader before memory mapping, as a baseline: zarr windows one call each through the
    codec pipeline (seeded permutation, DataLoader workers), webdataset from a tar stream."""
    source = open_split(root, load_manifest(root), "train")
    cfg = DataConfig(batch_size=BATCH, num_workers=workers, shuffle_block=1)
    extra = dict(persistent_workers=True, prefetch_factor=2) if workers else {}
    if source.storage == "zarr":
        sampler = EpochBatchSampler(source.pairs, BATCH, SEED)
        loader = DataLoader(ZarrWindows.of(source), batch_sampler=sampler, num_workers=workers,
                            collate_fn=lambda b: b, **extra)
    else:
        stream = WebDatasetStream(source, BATCH, SEED, wds_epoch_batches(source, cfg, 1),
                                  cfg.shuffle_buffer)
        loader = DataLoader(stream, batch_size=None, num_workers=workers,
                            collate_fn=lambda b: b, **extra)
    return iter(loader)


def streaming(root: Path, workers: int, group: bool = True) -> Iterator[dict]:
    source = open_split(root, load_manifest(root), "train")
    cfg = DataConfig(batch_size=BATCH, num_workers=workers, group_variants=group)
    return train_batches(source, cfg, SEED)


def resident(root: Path) -> Iterator[dict]:
    source = open_split(root, load_manifest(root), "train")
    split = ResidentSplit(source, torch.device("cpu"))
    return resident_batches(split, iter(train_sampler(source, DataConfig(batch_size=BATCH),
                                                      SEED)))


def memcpy_ceiling(reps: int = 20, windows: int = BATCH) -> float:
    """Windows/s of a single-core copy of ``windows`` windows (clean + noisy; one batch by
    default, the ceiling the goals are stated against)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    src = torch.ones(windows, 2, D, F, dtype=torch.float16)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    return reps * windows / seconds


def demo_compression() -> str:
    """Bytes of the demo cache's blosc-zstd latents against raw, when that cache exists."""
    import json

    path = DEMO_CACHE / "manifest.json"
    if not path.is_file():
        return "n/a (no data/demo_cache_random)"
    m = json.loads(path.read_text())
    if m.get("config", {}).get("compressor") != "blosc-zstd":
        return "n/a (demo cache not compressed)"
    raw = sum(m["counts"]["windows"].values()) * PAIR_BYTES
    stored = sum(f["bytes"] for s in m["splits"].values() for sh in s["shards"]
                 for f in sh.get("files", []) if "/clean/" in f["path"] or "/noisy/" in f["path"])
    return f"{100 * (1 - stored / raw):.1f} % saved by blosc-zstd on the demo cache latents"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=90)
    parser.add_argument("--out", type=Path, default=BENCHMARKS)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    nb = args.batches
    K = CacheConfig().noisy_per_clean
    ks = (1, K) if K > 1 else (1,)
    rows: list[tuple[str, int, str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="cleancodec-loader-") as tmp:
        caches = {(fmt, k): write_cache(Path(tmp) / f"{fmt}-k{k}", fmt, args.windows, K=k)
                  for fmt in ("zarr", "webdataset") for k in ks}
        blosc = write_cache(Path(tmp) / "zarr-blosc", "zarr", args.windows, "blosc-zstd")
        ceiling = memcpy_ceiling()
        dram = memcpy_ceiling(reps=3, windows=args.windows)
        measure: list[tuple[str, int, str, str, Callable[[], Iterator[dict]], int, Path]] = []
        for workers in (0, 2):
            measure.append(("zarr", 1, "previous reader (blosc-zstd, codec pipeline)",
                            f"{workers}", lambda w=workers: previous_reader(blosc, w),
                            max(3, nb // 6), blosc))
            measure.append(("webdataset", 1, "previous reader (tar stream)", f"{workers}",
                            lambda w=workers: previous_reader(caches["webdataset", 1], w),
                            max(3, nb // 3), caches["webdataset", 1]))
            for (fmt, k), root in caches.items():
                measure.append((fmt, k, "streaming (byte ranges)", f"{workers}",
                                lambda r=root, w=workers: streaming(r, w), nb, root))
                if k > 1:
                    measure.append((fmt, k, "streaming, variants spread over batches",
                                    f"{workers}",
                                    lambda r=root, w=workers: streaming(r, w, False), nb, root))
        for (fmt, k), root in caches.items():
            measure.append((fmt, k, "resident (RAM)", "-", lambda r=root: resident(r), nb * 3,
                            root))
        for fmt, k, mode, workers, make, n, root in measure:
            r = 0.0
            for _ in range(PASSES):
                warm(root)  # right before each pass: this machine pages out what sits unread
                r = max(r, rate(make(), n))
            rows.append((fmt, k, mode, workers, r))
            print(f"{fmt:11s} K={k} {mode:45s} workers {workers}: {r:9.0f} windows/s", flush=True)
    prev = {(f, w): r for f, _, m, w, r in rows if m.startswith("previous")}
    lines = [
        f"## cache reader (`bench/loader.py`), {dt.date.today().isoformat()}, "
        f"commit {git_commit()}",
        "",
        f"Machine: {os.cpu_count()} CPU cores (shared), {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads); no GPU. {args.windows} synthetic training pairs per cache (DAC-16k shapes, "
        f"{D} x {F} {DTYPE}; a window here = one training pair, clean + noisy = "
        f"{PAIR_BYTES / 1e3:.0f} KB delivered), K = noisy latents per clean window "
        f"(default {K}), warm page cache (each cache read whole right before each pass), "
        f"batch {BATCH}, shards of {WINDOWS_PER_SHARD} pairs, "
        f"each row the better of {PASSES} passes. Single-core memcpy ceiling (one batch): "
        f"**{ceiling:,.0f} windows/s** ({ceiling * PAIR_BYTES / 1e9:.1f} GB/s); a single-core "
        f"memcpy of a buffer the size of a K = 1 cache ({args.windows * PAIR_BYTES / 1e6:.0f} "
        f"MB, out of the CPU caches like a read from the page cache): {dram:,.0f} windows/s "
        f"({dram * PAIR_BYTES / 1e9:.1f} GB/s). Compression: {demo_compression()}.",
        "",
        "| format | K | reader | workers | windows/s | GB/s | vs previous | share of memcpy |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for fmt, k, mode, workers, r in rows:
        base = prev.get((fmt, workers)) or prev.get((fmt, "2"))
        ratio = "" if mode.startswith("previous") else f"{r / base:.1f}x"
        lines.append(f"| {fmt} | {k} | {mode} | {workers} | {r:,.0f} | "
                     f"{r * PAIR_BYTES / 1e9:.2f} | {ratio} | {100 * r / ceiling:.0f} % |")
    lines += ["", f"Goals: streaming >= {GOAL_VS_PREVIOUS:g}x the previous reader for both "
              f"formats and >= {100 * GOAL_MEMCPY_SHARE:.0f} % of the memcpy ceiling with 2 "
              f"workers; resident >= {GOAL_RESIDENT:,} windows/s."]
    publish("\n".join(lines) + "\n", args.out, not args.no_append)


if __name__ == "__main__":
    main()

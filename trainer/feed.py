"""What the training step eats: batches on the training device, the next one already there.

Two sources of training batches, identical batch for batch (same sampler, same pairs):

- **streaming**: :func:`cleancodec.trainer.data.train_batches` reads each batch from the cache
  (indexed byte ranges read with one ``preadv`` per window, DataLoader workers, pinned memory on
  CUDA);
- **resident**: :class:`ResidentSplit` loads the train split once into RAM or GPU memory and
  gathers each batch there with one indexed copy per tensor.

``train.data.resident`` chooses (``auto``: GPU memory, then RAM, when the split fits
``resident_share`` of what is free; the log says what it chose and why). :class:`DevicePrefetcher`
then keeps the next batch's host → GPU copy running on a side stream while the step computes,
and measures how long the step waited for data.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import psutil
import torch
from tqdm import tqdm

from cleancodec.core.topology import Topology
from cleancodec.trainer.cache_split import CORRUPT_KEY, Batch, CacheDataError, SplitSource
from cleancodec.trainer.config import DataConfig
from cleancodec.trainer.data import pair_dataset, train_batches, train_sampler
from cleancodec.trainer.mapped import BatchRing

log = logging.getLogger(__name__)

GB = 1e9
LOAD_CHUNK = 256  # windows staged in host memory per copy to the GPU while loading


def split_bytes(source: SplitSource) -> int:
    """Bytes of a split's latents in memory: one clean and ``K`` noisy windows per window."""
    window = source.latent_dim * source.frames * np.dtype(source.dtype).itemsize
    return (source.windows + source.pairs) * window


def choose_resident(cfg: DataConfig, source: SplitSource, env: Topology) -> tuple[str, str]:
    """``(off | ram | gpu, why)`` for ``train.data.resident`` on this split and machine.

    RAM is shared by the ranks of a machine, so each may use ``resident_share / local ranks`` of
    the available RAM; each GPU's memory is its own.

    Raises
    ------
    CacheDataError
        ``ram`` or ``gpu`` was asked for and cannot be had (no GPU, or the split does not fit).
    """
    mode, share = cfg.resident, cfg.resident_share
    if mode == "off":
        return "off", "train.data.resident=off"
    need = split_bytes(source)
    ram = psutil.virtual_memory().available / max(1, env.local_world_size)
    gpu = torch.cuda.mem_get_info(env.device)[0] if env.device.type == "cuda" else 0
    sizes = f"train split {need / GB:.2f} GB ({source.pairs} pairs)"
    if source.storage == "webdataset" and source.remote:
        if mode != "auto":
            raise CacheDataError(f"train.data.resident={mode} needs a cache read by index; a "
                                 "remote webdataset cache is streamed (use a zarr cache, or "
                                 "resident=off)")
        return "off", "a remote webdataset cache is streamed, not indexed"
    if mode == "gpu":
        if env.device.type != "cuda":
            raise CacheDataError(f"train.data.resident=gpu, but training runs on {env.device}")
        if need > gpu:
            raise CacheDataError(f"train.data.resident=gpu: {sizes} does not fit the "
                                 f"{gpu / GB:.2f} GB free on {env.device}")
        return "gpu", f"asked for; {sizes}, {gpu / GB:.2f} GB free on {env.device}"
    if mode == "ram":
        if need > ram:
            raise CacheDataError(f"train.data.resident=ram: {sizes} does not fit the "
                                 f"{ram / GB:.2f} GB of RAM available to this rank")
        return "ram", f"asked for; {sizes}, {ram / GB:.2f} GB RAM available to this rank"
    if gpu and need <= share * gpu:
        return "gpu", f"{sizes} <= {share:g} x {gpu / GB:.2f} GB free on {env.device}"
    if need <= share * ram:
        return "ram", (f"{sizes} <= {share:g} x {ram / GB:.2f} GB RAM available to this rank"
                       + (f" (GPU: {gpu / GB:.2f} GB free, too little)" if gpu else ""))
    return "off", (f"{sizes} > {share:g} x {ram / GB:.2f} GB RAM available to this rank"
                   + (f" and > {share:g} x {gpu / GB:.2f} GB free GPU memory" if gpu else "")
                   + "; streaming from the cache")


class ResidentSplit:
    """A split's latents held in memory (``device``: CPU RAM or a GPU), gathered per batch.

    ``clean`` is ``Tensor[N x D x F]``, ``noisy`` ``Tensor[N K x D x F]`` (cache dtype), read once
    through the same reader and checks as streaming; a window that fails them is warned about
    once, at load, and every pair using it is left out of its batches and counted as corrupt,
    as streaming does.
    """

    def __init__(self, source: SplitSource, device: torch.device, progress: bool = False):
        data = pair_dataset(source)
        self.K, self.device = source.noisy_per_clean, device
        n, shape = source.windows, (source.latent_dim, source.frames)
        dtype = getattr(torch, source.dtype)
        self.clean = torch.empty((n, *shape), dtype=dtype, device=device)
        self.noisy = torch.empty((n * self.K, *shape), dtype=dtype, device=device)
        self.bad = np.zeros(n * self.K, dtype=bool)
        self._ring = BatchRing()
        chunk = min(n, LOAD_CHUNK)
        stage = {name: torch.empty((chunk * (self.K if name == "noisy" else 1), *shape),
                                   dtype=dtype, pin_memory=device.type == "cuda")
                 for name in ("clean", "noisy")}
        bar = tqdm(total=n, desc="loading train split", unit="window", disable=not progress)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            arrays = {name: t.numpy() for name, t in stage.items()}
            for i in range(lo, hi):
                j = i - lo
                try:
                    data.read_clean(i, arrays["clean"][j])
                except CacheDataError as exc:
                    log.warning("%s; its pairs are left out", exc)
                    self.bad[i * self.K:(i + 1) * self.K] = True
                for k in range(self.K):
                    try:
                        data.read_noisy(i, k, arrays["noisy"][j * self.K + k])
                    except CacheDataError as exc:
                        log.warning("%s; pair left out", exc)
                        self.bad[i * self.K + k] = True
            self.clean[lo:hi].copy_(stage["clean"][:hi - lo], non_blocking=True)
            self.noisy[lo * self.K:hi * self.K].copy_(stage["noisy"][:(hi - lo) * self.K],
                                                      non_blocking=True)
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()  # the stage is reused
            bar.update(hi - lo)
        bar.close()

    @property
    def nbytes(self) -> int:
        return self.clean.nbytes + self.noisy.nbytes

    def batch(self, pairs: list[int] | np.ndarray) -> Batch:
        """``{"noisy", "clean"}`` ``Tensor[B x D x F]`` of ``pairs`` (on this split's device)
        plus ``"corrupt"``: how many were left out."""
        pairs = np.asarray(pairs, dtype=np.int64)
        good = pairs[~self.bad[pairs]]
        if len(good) == 0:
            raise CacheDataError(f"every window of a batch of {len(pairs)} was corrupt (see the "
                                 "warnings above for the files)")
        idx = {"noisy": good, "clean": good // self.K}
        out = self._ring.get(len(good), tuple(self.clean.shape[1:]), self.clean.dtype,
                             self.device)
        for name, src in (("noisy", self.noisy), ("clean", self.clean)):
            torch.index_select(src, 0, torch.from_numpy(idx[name]).to(self.device),
                               out=out[name])
        out[CORRUPT_KEY] = torch.tensor(len(pairs) - len(good))
        return out


def resident_batches(split: ResidentSplit, sampler: Iterator[list[int]],
                     pin: bool = False) -> Iterator[Batch]:
    """Endless batches of ``split`` in ``sampler``'s order (``pin``: in pinned host memory, for a
    non-blocking copy of a RAM-resident split to the GPU)."""
    for pairs in sampler:
        batch = split.batch(pairs)
        yield {k: v.pin_memory() for k, v in batch.items()} if pin else batch


class DevicePrefetcher:
    """Batches of ``batches`` on ``device``; on CUDA the next batch's copy (non-blocking, from
    pinned memory) runs on a side stream while the current step computes.

    :attr:`wait_seconds` accumulates the time :meth:`__next__` spent waiting for the source:
    the training loop reports it as the share of a step spent waiting for data.
    """

    def __init__(self, batches: Iterator[Batch], device: torch.device):
        self.batches, self.device = batches, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.wait_seconds = 0.0
        self._next: Batch | None = None

    def _fetch(self) -> Batch:
        t0 = time.perf_counter()
        batch = next(self.batches)
        self.wait_seconds += time.perf_counter() - t0
        if self.stream is None:
            return batch
        with torch.cuda.stream(self.stream):
            return {k: (v.to(self.device, non_blocking=True) if v.is_floating_point() else v)
                    for k, v in batch.items()}

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> Batch:
        if self.stream is None:
            return self._fetch()
        if self._next is None:
            self._next = self._fetch()
        t0 = time.perf_counter()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        batch = self._next
        for v in batch.values():
            if v.is_cuda:
                v.record_stream(torch.cuda.current_stream(self.device))
        self.wait_seconds += time.perf_counter() - t0
        self._next = self._fetch()  # the copy of batch s+1 overlaps step s
        return batch


def training_feed(source: SplitSource, cfg: DataConfig, seed: int, env: Topology,
                  start: int = 0) -> DevicePrefetcher:
    """The training batches of this rank from step ``start`` on, on ``env.device``: resident or
    streamed as ``train.data.resident`` decides (logged), then prefetched to the device."""
    choice, why = choose_resident(cfg, source, env)
    log.info("train data: %s (%s)", "resident in GPU memory" if choice == "gpu" else
             "resident in RAM" if choice == "ram" else "streamed from the cache", why)
    if choice == "off":
        batches = train_batches(source, cfg, seed, env.rank, env.world_size, start,
                                pin_memory=env.device.type == "cuda")
    else:
        device = env.device if choice == "gpu" else torch.device("cpu")
        split = ResidentSplit(source, device, progress=env.is_main)
        log.info("train split resident: %.2f GB on %s", split.nbytes / GB, device)
        sampler = iter(train_sampler(source, cfg, seed, env.rank, env.world_size, start))
        batches = resident_batches(split, sampler,
                                   pin=choice == "ram" and env.device.type == "cuda")
    return DevicePrefetcher(batches, env.device)

"""Running shard tasks: in this process (overlapped threads) or in a pool of worker processes.

Each task is mix → encode → write of one shard (:mod:`cleancodec.pipeline.windows`,
:func:`cleancodec.pipeline.shards.write_shard`); ``on_done(split, record)`` receives each
finished shard's manifest record. :class:`Progress` is the tqdm bar over windows.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cleancodec.core.topology import Topology
from cleancodec.pipeline.plan import Plan, ShardTask
from cleancodec.pipeline.shards import write_shard
from cleancodec.pipeline.windows import encode_shard, mix_shard

OnDone = Callable[[str, dict[str, Any]], None]
IO_THREADS = 2            # one mixing the next shard, one writing the previous one
MIN_ELAPSED_S = 1e-9      # guards the rate against a zero elapsed time


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_codec_config(codec_cfg: Any, topology: Topology, workers: int) -> Any:
    """This process's codec settings: torch threads shared among the processes on this machine
    (``workers`` per rank). The GPU of each rank follows from ``LOCAL_RANK``
    (:func:`cleancodec.core.topology.pick_device`)."""
    procs = max(1, workers) * max(1, topology.local_world_size)
    if not codec_cfg.num_threads and procs > 1:
        return dataclasses.replace(codec_cfg, num_threads=max(1, cpu_count() // procs))
    return codec_cfg


_WORKER: dict[str, Any] = {}  # per worker process: plan, codec, cache dir (set by _init_worker)


def _init_worker(plan: Plan, codec_cfg: Any, cache_dir: str) -> None:
    # A stop signal is for the main process to act on (finish the shards in flight, save the
    # ledger); a Ctrl-C sent to the whole process group must not kill the workers mid-shard.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    from cleancodec.core.codec import load_codec

    _WORKER.update(plan=plan, codec=load_codec(codec_cfg), cache_dir=Path(cache_dir))


def _run_task_in_worker(task: ShardTask) -> tuple[str, dict[str, Any]]:
    plan, codec, cache_dir = _WORKER["plan"], _WORKER["codec"], _WORKER["cache_dir"]
    mixed = mix_shard(plan, task)
    return task.split, write_shard(plan, cache_dir, mixed, encode_shard(codec, mixed, plan.dtype))


class Progress:
    """tqdm over windows with an audio-hours-per-hour rate."""

    def __init__(self, total: int, done: int, window_seconds: float, enabled: bool):
        self.bar = tqdm(total=total, initial=done, unit="win", desc="cache", disable=not enabled,
                        dynamic_ncols=True)
        self.window_seconds = window_seconds
        self.start = time.perf_counter()
        self.count = 0

    def update(self, windows: int) -> None:
        """Count ``windows`` more finished windows."""
        self.count += windows
        elapsed = max(time.perf_counter() - self.start, MIN_ELAPSED_S)
        # audio-seconds per wall-second equals audio-hours per wall-hour
        rate = self.count * self.window_seconds / elapsed
        self.bar.set_postfix_str(f"{rate:.2f} audio-h/h")
        self.bar.update(windows)

    def close(self) -> None:
        self.bar.close()


def _never() -> bool:
    return False


def run_tasks_inline(plan: Plan, codec: Any, cache_dir: Path, tasks: list[ShardTask],
                     on_done: OnDone, should_stop: Callable[[], bool] = _never) -> None:
    """Build ``tasks`` in this process: mixing the next shard and writing the previous one
    run in background threads while the codec encodes the current one. When ``should_stop()``
    turns true, the shard being written is finished and no other is started."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="cache-io") as pool:
        next_mix: Future = pool.submit(mix_shard, plan, tasks[0])
        writing: tuple[str, Future] | None = None
        for i in range(len(tasks)):
            if should_stop():
                break
            mixed = next_mix.result()
            if i + 1 < len(tasks):
                next_mix = pool.submit(mix_shard, plan, tasks[i + 1])
            latents = encode_shard(codec, mixed, plan.dtype)
            if writing is not None:
                on_done(writing[0], writing[1].result())
            writing = (mixed.task.split, pool.submit(write_shard, plan, cache_dir, mixed, latents))
        if writing is not None:
            on_done(writing[0], writing[1].result())


def run_tasks_pool(plan: Plan, codec_cfg: Any, cache_dir: Path, tasks: list[ShardTask],
                   workers: int, on_done: OnDone,
                   should_stop: Callable[[], bool] = _never) -> None:
    """Build ``tasks`` in ``workers`` spawned processes, each with its own codec. When
    ``should_stop()`` turns true, shards not yet started are dropped; those in flight finish."""
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(plan, codec_cfg, str(cache_dir))) as pool:
        futures = [pool.submit(_run_task_in_worker, t) for t in tasks]
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                on_done(*future.result())
                if should_stop():
                    for f in futures:
                        f.cancel()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


__all__ = ["Progress", "cpu_count", "run_tasks_inline", "run_tasks_pool",
           "worker_codec_config"]

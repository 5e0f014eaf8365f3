"""Distributed setup in one place: single process by default, DDP when launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`distributed_session` then
initialises the process group (NCCL on CUDA, gloo on CPU), pins each rank to its GPU, and tears
the group down on exit. Nothing else in the trainer reads these variables.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ENV_RANK, ENV_WORLD, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are present."""
    return ENV_RANK in os.environ and ENV_WORLD in os.environ


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (for printing once)."""
    return int(os.environ.get(ENV_RANK, "0")) == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else CPU; ``cuda``: ``cuda:<local>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistEnv]:
    """Yield the :class:`DistEnv` of this process, with a process group when under torchrun."""
    if not launched_by_torchrun() or int(os.environ[ENV_WORLD]) <= 1:
        yield DistEnv(device=pick_device(device))
        return
    rank, world = int(os.environ[ENV_RANK]), int(os.environ[ENV_WORLD])
    local_rank = int(os.environ.get(ENV_LOCAL_RANK, rank))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        yield DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself."""
    if not env.distributed:
        return model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a single process)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if env.distributed:
        dist.barrier()


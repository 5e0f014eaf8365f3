"""Process topology and devices for every stage: one process by default, ranks under ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; this module
is the only place in cleancodec that reads them. It answers:

- where this process sits (:class:`Topology`: rank, world size, local rank, its device);
- which device a setting names (:func:`pick_device`: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``;
  for ``auto`` / ``cuda`` the local rank picks the GPU index);
- the bf16 autocast context (:func:`bf16_autocast`);
- the process group's lifetime (:func:`process_group`: NCCL on CUDA, gloo on CPU, created only
  when the world is larger than one and torn down on exit) and the collectives the stages use
  (:func:`barrier`, :func:`all_reduce_sum`, :func:`broadcast_object`, :func:`wrap`).

Every helper is a no-op in a single process, so callers never branch on "distributed or not".
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ENV_RANK = "RANK"
ENV_WORLD = "WORLD_SIZE"
ENV_LOCAL_RANK = "LOCAL_RANK"
ENV_LOCAL_WORLD = "LOCAL_WORLD_SIZE"
CUDA = "cuda"
CPU = "cpu"
NCCL, GLOO = "nccl", "gloo"
MAIN_RANK = 0


@dataclass(frozen=True)
class Topology:
    """Where this process sits: rank / world size (global and on this machine) and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device(CPU)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and in a single process): the rank that writes shared files."""
        return self.rank == MAIN_RANK

    @property
    def distributed(self) -> bool:
        """True when there is more than one rank."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables (``RANK`` and ``WORLD_SIZE``) are present."""
    return ENV_RANK in os.environ and ENV_WORLD in os.environ


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (for printing once)."""
    return int(os.environ.get(ENV_RANK, str(MAIN_RANK))) == MAIN_RANK


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; else ``RANK``; else 0)."""
    return int(os.environ.get(ENV_LOCAL_RANK, os.environ.get(ENV_RANK, "0")))


def from_env(device: str = CPU) -> Topology:
    """The :class:`Topology` the environment describes (world 1 when not launched by torchrun).

    Reads the variables only; joining the process group is :func:`process_group`'s job.
    ``device`` is a setting for :func:`pick_device`.
    """
    if not launched_by_torchrun():
        return Topology(device=pick_device(device, 0))
    env = os.environ
    world = int(env[ENV_WORLD])
    local = local_rank()
    return Topology(rank=int(env[ENV_RANK]), world_size=world, local_rank=local,
                    local_world_size=int(env.get(ENV_LOCAL_WORLD, str(world))),
                    device=pick_device(device, local))


def pick_device(name: str = "auto", local: int | None = None) -> torch.device:
    """The device a setting names.

    ``auto``: this rank's GPU when CUDA is available, else the CPU; ``cuda``: this rank's GPU;
    ``cuda:N`` / ``cpu``: that device. "This rank's GPU" is ``cuda:<local rank>`` (modulo the
    visible GPUs); ``local`` defaults to :func:`local_rank` (0 outside torchrun).
    """
    if name == "auto":
        name = CUDA if torch.cuda.is_available() else CPU
    if name != CUDA:
        return torch.device(name)
    index = local_rank() if local is None else local
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return torch.device(CUDA, index % count if count else index)


def bf16_autocast(device: torch.device | str, enabled: bool = True,
                  allow_cpu: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled``; a null context otherwise.

    CUDA only by default; ``allow_cpu`` also autocasts on the CPU (the codec's ``bf16`` setting
    allows that, the trainer's does not).
    """
    kind = torch.device(device).type
    if not enabled or (kind != CUDA and not allow_cpu):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16)


@contextlib.contextmanager
def process_group(device: str = "auto", backend: str | None = None,
                  timeout_minutes: float | None = None) -> Iterator[Topology]:
    """Yield this process's :class:`Topology`, inside a process group when the world is > 1.

    device : setting for :func:`pick_device`; a CUDA device is made the current one.
    backend : ``nccl`` / ``gloo``; default NCCL on CUDA, gloo on CPU (a CPU-only control group
        for barriers and small objects can be asked for with ``gloo`` on any device).
    timeout_minutes : how long a collective waits for the other ranks (torch's default if None).

    The group is destroyed on exit when this call created it.
    """
    topo = from_env(device)
    if not topo.distributed:
        yield topo
        return
    import torch.distributed as dist

    if topo.device.type == CUDA:
        torch.cuda.set_device(topo.device)
    owns_group = not dist.is_initialized()
    if owns_group:
        extra: dict[str, Any] = {}
        if timeout_minutes is not None:
            extra["timeout"] = _dt.timedelta(minutes=timeout_minutes)
        dist.init_process_group(backend or (NCCL if topo.device.type == CUDA else GLOO),
                                rank=topo.rank, world_size=topo.world_size, **extra)
    try:
        yield topo
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def barrier(topo: Topology) -> None:
    """Wait for every rank (no-op in a single process)."""
    if topo.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a single process); returns it."""
    if topo.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, topo: Topology, src: int = MAIN_RANK) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; ``obj`` itself in one process)."""
    if not topo.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap(model: nn.Module, topo: Topology) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself."""
    if not topo.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [topo.device.index] if topo.device.type == CUDA else None
    return DistributedDataParallel(model, device_ids=ids)


__all__ = [
    "Topology", "all_reduce_sum", "barrier", "bf16_autocast", "broadcast_object", "from_env",
    "is_main_process", "launched_by_torchrun", "local_rank", "pick_device", "process_group",
    "wrap",
]

"""Process-group set-up for multi-process training under ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU).

A single process (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) needs no process group; every
helper here then does the single-process thing, so the training loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vidseg.errors import VidsegError


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise VidsegError("train.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        if local_rank >= torch.cuda.device_count():
            raise VidsegError(
                f"process with LOCAL_RANK {local_rank} needs GPU cuda:{local_rank} but this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node (torchrun "
                "--nproc_per_node), or train on the CPU with train.device=cpu"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(device_preference: str) -> Context:
    """Join the process group that ``torchrun`` describes in the environment, or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world_size, device=device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``value`` on every process."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(num_items: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, ...``: every item on exactly one process, none repeated or padded."""
    return list(range(rank, num_items, world_size))


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers (e.g. BatchNorm running statistics)."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)

"""torchrun / DistributedDataParallel plumbing: process group, device, reductions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from wsi_tumor.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when launched by torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0


def pick_device(preference: str, local_rank: int) -> torch.device:
    """``auto``: CUDA (this process's local GPU) when available, else the CPU.

    Raises:
        ConfigError: ``cuda`` asked for where there is no GPU.
    """
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "cuda":
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device("cpu")


def setup(preference: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (env RANK / WORLD_SIZE / LOCAL_RANK).

    NCCL on CUDA, gloo on the CPU. A plain ``python`` launch is a world of one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    device = pick_device(preference, info.local_rank)
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined (%s, %s)", info.rank, world, backend, device)
    return info, device


def teardown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all processes (identity for a single process)."""
    if info.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for a single process)."""
    if info.distributed:
        dist.barrier()

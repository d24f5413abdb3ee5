"""Data-parallel training across processes started by `torchrun` (gloo on CPU, DDP).

Run the unchanged command under torchrun, e.g. two processes on one machine:
    torchrun --nproc-per-node 2 --no-python lantern twin build NOTES --steps 100
Each process trains on its own slice of every batch; DDP averages the LoRA gradients, so the
result is the training of one process with a batch as large as all the slices together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def agree_max(self, value: float) -> float:
        """The largest ``value`` over all processes, so every process takes the same decision."""
        if not self.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor[0])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_environment() -> Distributed:
    """The process group torchrun describes in the environment (WORLD_SIZE, RANK); none without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())

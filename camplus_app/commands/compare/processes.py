"""This process's place under ``torchrun``: its rank, its GPU, and the few collectives
``camplus compare`` needs (the processes meet only at the start and at the end)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from camplus_app.options import torchrun_place
from metrics.distributed import gather


@dataclass
class Processes:
    """This process's place under ``torchrun`` (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started: bool = False

    @classmethod
    def from_environment(cls) -> Processes:
        rank, world, local_rank = torchrun_place()
        return cls(rank, world, local_rank)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` becomes ``cuda:<local rank>``."""
        if self.world > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            # the processes meet only at the start and the end; a long shard must not time out
            dist.init_process_group(backend, timeout=timedelta(days=7))
            self.started = True

    def stop(self) -> None:
        if self.started:
            dist.destroy_process_group()
            self.started = False

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        return gather(value, self.world)

    def agree(self, error: str | None) -> str | None:
        """Every process's error, shared: the first one, or None if all went well."""
        return next((e for e in self.gather(error) if e is not None), None)

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


__all__ = ["Processes"]

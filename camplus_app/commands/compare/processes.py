"""This process's place under ``torchrun``: its rank, its GPU, and the few collectives
``camplus compare`` needs (the processes meet only at the start and at the end).

A collective fails when another process is gone: gloo and NCCL raise ``RuntimeError`` (torch's
``DistError`` family) from it, at once when the peer's connection closes, or after
:func:`process_timeout` when a peer hangs. Every collective here reports that as
:class:`~camplus_app.errors.PeerProcessFailed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from camplus_app.errors import PeerProcessFailed, UsageError, one_line
from camplus_app.options import torchrun_place
from metrics.distributed import gather

#: How long a process waits at a collective for the others, by default: longer than any gap
#: between processes that finish their shares of a run (equal numbers of batches), short
#: enough that a hung process does not hold the others for long.
TIMEOUT = timedelta(minutes=30)
#: The environment variable that sets another wait, in minutes.
TIMEOUT_VARIABLE = "CAMPLUS_PROCESS_TIMEOUT"

_Value = TypeVar("_Value")


def process_timeout() -> timedelta:
    """How long a process waits for the others at a collective: :data:`TIMEOUT`, or the
    minutes of ``CAMPLUS_PROCESS_TIMEOUT``."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return TIMEOUT
    try:
        minutes = float(text)
    except ValueError:
        minutes = 0.0
    if not minutes > 0:
        raise UsageError(f"{TIMEOUT_VARIABLE}={text!r} is not a positive number of minutes")
    return timedelta(minutes=minutes)


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
            dist.init_process_group(backend, timeout=process_timeout())
            self.started = True

    def stop(self) -> None:
        if self.started:
            dist.destroy_process_group()
            self.started = False

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        return self._collective(lambda: gather(value, self.world))

    def agree(self, error: str | None) -> str | None:
        """Every process's error, shared: the first one, or None if all went well."""
        return next((e for e in self.gather(error) if e is not None), None)

    def share(self, value: _Value) -> _Value:
        """Rank 0's ``value`` on every process."""
        if self.world == 1:
            return value
        box = [value]
        self._collective(lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def _collective(self, action: Callable[[], _Value]) -> _Value:
        """``action()``, a collective: its failure raised as :class:`PeerProcessFailed`."""
        try:
            return action()
        except RuntimeError as error:  # gloo, NCCL and their DistError subclasses
            raise PeerProcessFailed(
                f"process {self.rank} of {self.world} lost the others: another process stopped "
                f"(killed, out of memory, or its own error) ({one_line(error)})"
            ) from error


__all__ = ["TIMEOUT", "TIMEOUT_VARIABLE", "Processes", "process_timeout"]

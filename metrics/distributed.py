"""Several processes under ``torch.distributed``: this process's rank, its shard of the data,
and every process's results gathered in rank order (the one gather path, also used by
``camplus compare``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


Batch = tuple[Tensor, Tensor | None, Tensor]


def shard(
    data: Tensor | Iterable[Any], labels: Tensor | None, batch_size: int, rank: int, world: int
) -> tuple[Iterator[Batch], int | None]:
    """This rank's batches ``(x, labels or None, positions)`` and their number if known."""
    if isinstance(data, Tensor):
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"got {len(labels)} labels for {len(data)} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        start, stop = len(data) * rank // world, len(data) * (rank + 1) // world
        starts = range(start, stop, batch_size)

        def tensor_batches() -> Iterator[Batch]:
            for s in starts:
                e = min(s + batch_size, stop)
                yield data[s:e], None if labels is None else labels[s:e], torch.arange(s, e)

        return tensor_batches(), len(starts)
    if labels is not None:
        raise ValueError("labels go with tensor data; a DataLoader's batches carry their own")

    def loader_batches() -> Iterator[Batch]:
        seen = 0
        for item in data:
            x, item_labels = (item, None) if isinstance(item, Tensor) else (item[0], item[1])
            yield x, item_labels, torch.arange(seen, seen + len(x))
            seen += len(x)

    total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    return loader_batches(), total


def gather(value: Any, world: int | None = None) -> list[Any]:
    """Every process's ``value`` (any picklable object), in rank order, on every process: the
    one way results travel between processes (``[value]`` for one process)."""
    world = rank_and_world()[1] if world is None else world
    if world == 1:
        return [value]
    values: list[Any] = [None] * world
    dist.all_gather_object(values, value)
    return values


def concatenate_records(
    shards: Iterable[list[dict[str, Any]]], local_positions: bool
) -> list[dict[str, Any]]:
    """The records of every process, in rank order. ``local_positions``: each process numbered
    its images from 0 (its own DataLoader), so a process's positions follow those of the
    processes before it."""
    merged: list[dict[str, Any]] = []
    for records in shards:
        offset = len(merged) if local_positions else 0
        merged += [{**r, "position": r["position"] + offset} for r in records]
    return merged


__all__ = ["Batch", "concatenate_records", "gather", "rank_and_world", "shard"]

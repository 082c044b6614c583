"""Several processes under ``torch.distributed``: this process's rank, its shard of the data,
and every process's results gathered in rank order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
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


def gather(local: dict[str, Any], world: int) -> dict[str, Any]:
    """Every rank's results, concatenated in rank order, on every rank."""
    shards: list[Any] = [None] * world
    dist.all_gather_object(shards, local)
    merged: dict[str, Any] = {}
    offset = 0
    indices = []
    for shard in shards:
        indices.append(shard["index"] + offset if shard["local_index"] else shard["index"])
        offset += shard["images_seen"]
    merged["index"] = torch.cat(indices)
    for key in local:
        if key not in ("index", "images_seen", "local_index"):
            merged[key] = torch.cat([shard[key] for shard in shards])
    merged["images_seen"] = offset
    return merged


__all__ = ["Batch", "gather", "rank_and_world", "shard"]

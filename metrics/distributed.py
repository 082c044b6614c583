"""Several processes under ``torch.distributed``: this process's rank, its shard of the data,
and every process's results gathered in rank order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
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
    """This rank's batches ``(x, labels or None, positions)`` and their number if known.

    ``data`` is a tensor (or a numpy array) of images, or an iterable of batches ``x``,
    ``(x,)`` or ``(x, labels, ...)``; anything else raises ``TypeError`` saying what it got.
    """
    if isinstance(data, np.ndarray):  # Quantus' habit: taken as the tensor it holds
        data = torch.from_numpy(data)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if isinstance(data, (str, bytes)) or not isinstance(data, (Tensor, Iterable)):
        raise TypeError(
            f"data must be images (N, C, H, W) as a tensor, or a DataLoader of batches x or "
            f"(x, labels), got {type(data).__name__}"
        )
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
        for number, item in enumerate(data):
            x, item_labels = _batch(item, number)
            yield x, item_labels, torch.arange(seen, seen + len(x))
            seen += len(x)

    total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    return loader_batches(), total


def _batch(item: Any, number: int) -> tuple[Tensor, Tensor | None]:
    """``(x, labels or None)`` of one batch of a loader, or a ``TypeError`` naming it."""
    if isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], Tensor):
        labels = item[1] if len(item) > 1 else None
        if labels is not None and not isinstance(labels, Tensor):
            labels = torch.as_tensor(labels)
        return item[0], labels
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, dict):
        raise TypeError(
            f"batch {number} of the data is a dict (keys {', '.join(map(str, item))}): "
            "evaluate_methods takes batches x or (x, labels); pass e.g. "
            "((b['image'], b['label']) for b in loader)"
        )
    inner = f" of {type(item[0]).__name__}" if isinstance(item, (tuple, list)) and item else ""
    raise TypeError(
        f"batch {number} of the data is a {type(item).__name__}{inner}: evaluate_methods takes "
        "batches x or (x, labels) of tensors"
    )


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

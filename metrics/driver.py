"""Score several CAM methods on a data set with every metric (Lerma & Lucas, section 4): the
batches of :class:`~metrics.scoring.BatchScorer` over the data (this process's shard under
``torch.distributed``), gathered into one :class:`~metrics.result.EvaluationResult`.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_camplus import MethodFactory
from captum_camplus.layouts import LayoutSpec

from .confidence import Preprocess
from .distributed import gather, rank_and_world, shard
from .heatmaps import MAPS_FROM, MapsFrom
from .result import EvaluationResult, PerMethod
from .scoring import BatchScorer, BatchScores, LayerCallback


def evaluate_methods(
    model: nn.Module,
    layer: nn.Module | str,
    data: Tensor | Iterable[Any],
    methods: Sequence[str] | Mapping[str, MethodFactory] | None = None,
    *,
    labels: Tensor | None = None,
    maps_from: Sequence[MapsFrom] = MAPS_FROM,
    softmax: bool = True,
    threshold: float | None = None,
    preprocess: Preprocess | None = None,
    unseen: Tensor | None = None,
    batch_size: int = 32,
    progress: bool = True,
    on_layer: LayerCallback | None = None,
    layout: LayoutSpec = None,
) -> EvaluationResult:
    """Score every method on every image with every metric.

    Args:
        model: The classifier, returning ``(N, classes)`` logits. One in training mode is
            evaluated in eval mode and left as it was (:mod:`metrics.guards`).
        layer: Its CAM layer (module or name).
        data: Images ``(N, C, H, W)``, or an iterable (DataLoader) of batches ``x`` or
            ``(x, labels, ...)``. Under ``torch.distributed`` a tensor is split across the
            ranks here; an iterable must already be this rank's shard (a DistributedSampler
            without padding, or a manual split).
        methods: Names of registered methods (:data:`captum_camplus.METHODS`; default: all of
            them, the built-ins in the order of Lerma & Lucas plus HiResCAM) or a mapping
            name -> class/factory.
        labels: The class to explain per image for tensor ``data``; default the predicted one.
        maps_from: Maps from gradients of the logits, of the softmax, or both (Lerma & Lucas,
            tables 1-2).
        softmax: Score ``Y`` and ``O`` as softmax probabilities (the papers) or raw outputs.
        threshold: Keep only images whose score ``Y`` exceeds it (Lerma & Lucas use 0.5 on
            softmax).
        preprocess: If given, ``data`` holds images in [0, 1] and the model sees
            ``preprocess(x)``; ``E = L (.) I`` is taken on the image.
        unseen: Boolean ``(H, W)`` mask of a region the model cannot see, for the dead-zone mass.
        batch_size: For tensor ``data``.
        progress: Show a progress bar (on rank 0).
        on_layer: Called per batch and kind of map with ``(maps_from, index, A, g)`` of the
            images that passed the threshold, on the layer's grid ``(N, C, *grid)``, e.g. to
            collect the Grad-CAM++ alphas of Lerma & Lucas, figures 3-4, with
            :meth:`captum_camplus.LayerGradCamPlusPlus.alphas`.
        layout: The layer's layout (``"tokens"`` for a ViT, ``"channels_last"`` for a Swin
            stage), as :class:`captum_camplus.CamAttribution` takes it.

    Raises:
        ValueError: if no image passes the threshold, and for bad arguments.
    """
    scorer = BatchScorer(
        model,
        layer,
        methods,
        maps_from=maps_from,
        softmax=softmax,
        threshold=threshold,
        preprocess=preprocess,
        unseen=unseen,
        on_layer=on_layer,
        layout=layout,
    )
    rank, world = rank_and_world()
    batches, total = shard(data, labels, batch_size, rank, world)
    scored = [
        scorer(x, batch_labels, index)
        for x, batch_labels, index in tqdm(
            batches, total=total, desc="scoring", unit="batch", disable=not progress or rank != 0
        )
    ]
    local = _concatenate(scored, scorer.names, scorer.maps_from, unseen is not None)
    local["local_index"] = not isinstance(data, Tensor)
    merged = gather(local, world) if world > 1 else local
    if merged["images_seen"] == 0:
        raise ValueError("the data holds no images: nothing to evaluate")
    if len(merged["index"]) == 0:
        raise ValueError(
            f"no image has a score Y above the threshold {threshold}: nothing to evaluate"
        )
    return EvaluationResult(
        methods=scorer.names,
        maps_from=scorer.maps_from,
        index=merged["index"],
        target=merged["target"],
        y=merged["y"],
        log_y=merged["log_y"],
        o=_nest(merged, "o", scorer.maps_from, scorer.names),
        log_o=_nest(merged, "log_o", scorer.maps_from, scorer.names),
        dead_zone=(
            None if unseen is None else _nest(merged, "dead_zone", scorer.maps_from, scorer.names)
        ),
        softmax=softmax,
        threshold=threshold,
        images_seen=merged["images_seen"],
    )


def _concatenate(
    batches: list[BatchScores], names: list[str], maps_from: Sequence[str], dead_zone: bool
) -> dict[str, Any]:
    """This rank's results as ``key`` or ``key/maps/method`` -> one CPU tensor (kept images):
    one copy from the device, at the end."""
    whats = ("o", "log_o", "dead_zone") if dead_zone else ("o", "log_o")
    lists: dict[str, list[Tensor]] = {key: [] for key in ("index", "target", "y", "log_y")}
    lists.update({f"{w}/{s}/{n}": [] for w in whats for s in maps_from for n in names})
    for batch in batches:
        if not bool(batch.kept.any()):
            continue
        lists["index"].append(batch.index[batch.kept.to(batch.index.device)])
        for key in ("target", "y", "log_y"):
            lists[key].append(getattr(batch, key)[batch.kept])
        for what in whats:
            for source in maps_from:
                for name in names:
                    lists[f"{what}/{source}/{name}"].append(getattr(batch, what)[source][name])
    out: dict[str, Any] = {
        key: torch.cat(values).cpu() if values else torch.empty(0, dtype=_dtype(key))
        for key, values in lists.items()
    }
    out["images_seen"] = sum(len(batch.index) for batch in batches)
    return out


def _dtype(key: str) -> torch.dtype:
    return torch.long if key in ("index", "target") else torch.float64


def _nest(
    merged: dict[str, Any], what: str, maps_from: Sequence[str], names: list[str]
) -> PerMethod:
    return {s: {n: merged[f"{what}/{s}/{n}"] for n in names} for s in maps_from}


__all__ = ["evaluate_methods"]

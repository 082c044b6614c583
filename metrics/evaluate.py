"""Score several CAM methods on a data set with every metric (Lerma & Lucas, section 4).

Per batch (:class:`BatchScorer`): one forward that gives ``Y`` and keeps the layer's output,
one backward to the layer per kind of map (gradients of the logits and of the softmax, the two
columns of Lerma & Lucas, tables 1-2, both from that forward) that gives every method's map, and
one forward per method and kind of map for the scores ``O`` of its explanation maps: per image,
1 forward, 2 backwards to the layer and 2M forwards for M methods. Under ``torch.distributed``
each rank scores its shard and every rank gets all results.

>>> result = evaluate_methods(model, model.layer4, images, labels=labels, threshold=0.5)
>>> print(result)                     # aggregates and the relative-performance table
>>> result.summary()                  # the same as rows (dicts), e.g. for csv.DictWriter
>>> scorer = BatchScorer(model, model.layer, threshold=0.5)   # one batch at a time, to stream
>>> batch = scorer(x, labels, index)  # per-image Y, O, log O of every method

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_camplus import (
    METHODS,
    LayoutSpec,
    MethodFactory,
    find_layer,
    method_name,
    module_device,
)

from . import functional
from .confidence import (
    Preprocess,
    cam_dead_zone_mass,
    class_scores,
    explanation_maps,
    keep_mask,
    model_forward,
    target_scores,
)
from .guards import as_model_input, evaluation_mode
from .heatmaps import (
    MAPS_FROM,
    MapsFrom,
    layer_gradients,
    layer_pass,
    method_instances,
)

#: Per kind of map (``"pre-softmax"``/``"post-softmax"``), per method: one value per image.
PerMethod = dict[str, dict[str, Tensor]]

#: ``on_layer(maps_from, index, activations, gradients)``: the layer's ``A`` and ``g`` of the
#: images of a batch that passed the threshold (``index``: their positions in the data).
LayerCallback = Callable[[str, Tensor, Tensor, Tensor], None]


@dataclasses.dataclass
class EvaluationResult:
    """Per-image scores of every method; aggregates and tables are computed from them.

    All tensors are on the CPU, in float64, in the order of the data (for a DataLoader under
    ``torch.distributed``: rank 0's images first). Only images that passed the threshold are
    kept; ``index`` gives their positions in the data.
    """

    methods: list[str]
    maps_from: list[str]
    index: Tensor  #: (K,) positions of the scored images in the data
    target: Tensor  #: (K,) the explained class
    y: Tensor  #: (K,) ``Y``, the score of the class on the image
    log_y: Tensor  #: (K,) its log
    o: PerMethod  #: ``O``, the score on each method's explanation map
    log_o: PerMethod  #: its log (from ``log_softmax`` for softmax scores)
    dead_zone: PerMethod | None  #: dead-zone mass per image, if a region was given
    softmax: bool  #: softmax probabilities (True) or raw outputs
    threshold: float | None
    images_seen: int  #: images in the data before the threshold

    def summary(self, win_rtol: float = 1e-4) -> list[dict[str, Any]]:
        """One row per kind of map and method: the dataset values of every metric.

        ``win_rtol``: the tie tolerance of :func:`metrics.functional.win_percentage`.
        """
        rows = []
        for source in self.maps_from:
            o = self.o[source]
            wins = (
                functional.win_percentage(torch.stack([o[m] for m in self.methods]), rtol=win_rtol)
                if len(self.methods) > 1
                else torch.full((1,), math.nan)
            )
            for k, method in enumerate(self.methods):
                row = {
                    "maps": source,
                    "method": method,
                    "images": len(self.index),
                    "average drop": float(functional.average_drop(self.y, o[method])),
                    "increase in confidence": float(
                        functional.increase_in_confidence(self.y, o[method])
                    ),
                    "win percentage": float(wins[k]),
                }
                if self.dead_zone is not None:
                    row["dead zone mass"] = float(self.dead_zone[source][method].mean())
                rows.append(row)
        return rows

    def relative_performance(self) -> list[dict[str, Any]]:
        """Lerma & Lucas, tables 1-2: every later method vs every earlier one, per kind of map."""
        return [
            {
                "maps": source,
                "methods": f"{new} vs {base}",
                "relative performance": float(stats.geometric_mean),
                "log mean": float(stats.log_mean),
                "log std": float(stats.log_std),
            }
            for source, new, base, stats in self._pairs()
        ]

    def relative_performance_per_image(self) -> dict[str, dict[str, Tensor]]:
        """``O'_i / O_i`` per image for each pair of :meth:`relative_performance`, by kind of map
        (the boxplots of Lerma & Lucas, figure 6)."""
        ratios: dict[str, dict[str, Tensor]] = {source: {} for source in self.maps_from}
        for source, new, base, stats in self._pairs():
            ratios[source][f"{new} vs {base}"] = stats.log_ratio.exp()
        return ratios

    def _pairs(self) -> Iterator[tuple[str, str, str, functional.RelativePerformanceStats]]:
        """Every later method vs every earlier one, per kind of map, with their statistics."""
        for source in self.maps_from:
            log_o = self.log_o[source]
            for j, new in enumerate(self.methods):
                for base in self.methods[:j]:
                    yield (
                        source,
                        new,
                        base,
                        functional.relative_performance(log_o[new], log_o[base]),
                    )

    def image_rows(self) -> list[dict[str, Any]]:
        """One row per image, kind of map and method, with the per-image values."""
        rows = []
        for source in self.maps_from:
            for method in self.methods:
                o = self.o[source][method]
                drop = functional.average_drop(self.y, o, "none")
                for i in range(len(self.index)):
                    row = {
                        "index": int(self.index[i]),
                        "target": int(self.target[i]),
                        "maps": source,
                        "method": method,
                        "Y": float(self.y[i]),
                        "O": float(o[i]),
                        "log O": float(self.log_o[source][method][i]),
                        "drop %": float(drop[i]),
                    }
                    if self.dead_zone is not None:
                        row["dead zone mass"] = float(self.dead_zone[source][method][i])
                    rows.append(row)
        return rows

    def format(self) -> str:
        """The aggregates and the relative-performance table as text."""
        scores = "softmax probabilities" if self.softmax else "raw outputs"
        kept = f"{len(self.index)} of {self.images_seen} images"
        if self.threshold is not None:
            kept += f" (score > {self.threshold})"
        parts = [f"{kept}, scores: {scores}", format_table(self.summary())]
        if len(self.methods) > 1:
            parts += [
                "relative performance (Lerma & Lucas, tables 1-2)",
                format_table(self.relative_performance()),
            ]
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.format()


@dataclasses.dataclass
class BatchScores:
    """One batch's results, per image, on the model's device.

    ``index``, ``target``, ``y`` and ``log_y`` cover every image of the batch; ``kept`` marks
    those whose ``Y`` passed the threshold, and ``o``, ``log_o`` and ``dead_zone`` hold one
    value per kept image, in the batch's order.
    """

    index: Tensor  #: (N,) positions of the images in the data
    target: Tensor  #: (N,) the explained class
    y: Tensor  #: (N,) ``Y``, float64
    log_y: Tensor  #: (N,) its log
    kept: Tensor  #: (N,) bool, ``Y`` above the threshold
    o: PerMethod  #: (K,) per kind of map and method, for the kept images
    log_o: PerMethod
    dead_zone: PerMethod | None

    def cpu(self) -> BatchScores:
        """The same results on the CPU."""
        fields = {"o": self.o, "log_o": self.log_o, "dead_zone": self.dead_zone}
        nested = {k: None if v is None else _map_nested(v, Tensor.cpu) for k, v in fields.items()}
        return BatchScores(
            *(t.cpu() for t in (self.index, self.target, self.y, self.log_y, self.kept)), **nested
        )


class BatchScorer:
    """Scores one batch with every method and metric: the step :func:`evaluate_methods` repeats,
    for callers that stream results batch by batch.

    Per batch: one forward of the images, which gives ``Y`` and keeps the layer's output; one
    ``autograd.grad`` to the layer per kind of map on that forward's graph; each method's map
    from the same ``A`` and ``g``; one forward per method and kind of map on the explanation
    maps ``E = L (.) I`` of the images that passed the threshold. Arguments as in
    :func:`evaluate_methods`.

    Attributes:
        names: The methods' names, in order.
        methods: The method instances by name (e.g. ``methods["Grad-CAM++"].alphas(a, g)``).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str,
        methods: Sequence[str] | Mapping[str, MethodFactory] | None = None,
        *,
        maps_from: Sequence[MapsFrom] = MAPS_FROM,
        softmax: bool = True,
        threshold: float | None = None,
        preprocess: Preprocess | None = None,
        unseen: Tensor | None = None,
        on_layer: LayerCallback | None = None,
        layout: LayoutSpec = None,
    ) -> None:
        self.names = _method_names(methods)
        if not maps_from or any(source not in MAPS_FROM for source in maps_from):
            raise ValueError(
                f"maps_from must be a non-empty selection of {MAPS_FROM}, got {maps_from}"
            )
        self.maps_from = list(maps_from)
        self.model = model
        self.layer = find_layer(model, layer)
        factories = methods if isinstance(methods, Mapping) else self.names
        self.cams = method_instances(model, self.layer, factories, layout)
        self.methods = self.cams.methods
        self.device = module_device(model)
        self.model_forward = model_forward(model, preprocess)
        self.softmax = softmax
        self.threshold = threshold
        self.unseen = None if unseen is None else torch.as_tensor(unseen).to(self.device)
        self.on_layer = on_layer

    def __call__(
        self, x: Tensor, labels: Tensor | None = None, index: Tensor | None = None
    ) -> BatchScores:
        """Score ``x`` (``labels``: the classes to explain, default the predicted ones;
        ``index``: the images' positions in the data, default ``0..N-1``). A model in training
        mode is run in eval mode and left as it was (:mod:`metrics.guards`)."""
        with evaluation_mode(self.model):
            return self._score(x, labels, index)

    def _score(self, x: Tensor, labels: Tensor | None, index: Tensor | None) -> BatchScores:
        x = as_model_input(x, self.model)  # on its device, in its dtype
        if self.unseen is not None and self.unseen.dim() != x.dim() - 2:
            raise ValueError(
                f"unseen must be one mask of the images' spatial shape {tuple(x.shape[2:])}, "
                f"shared by all images; got shape {tuple(self.unseen.shape)}"
            )
        index = torch.arange(len(x)) if index is None else torch.as_tensor(index)
        passed = layer_pass(self.model_forward, self.layer, x)
        y = target_scores(passed.outputs, labels, self.softmax)
        kept = keep_mask(y.value, self.threshold)
        o, log_o, dead_zone = (_per_method(self.maps_from, self.names, x.device) for _ in range(3))
        scores = BatchScores(index, y.target, y.value, y.log, kept, o, log_o, dead_zone)
        if self.unseen is None:
            scores.dead_zone = None
        if not bool(kept.any()):  # no backward, no explanation maps
            return scores
        everything = bool(kept.all())
        x = x if everything else x[kept]
        kept_index = index if everything else index[kept.to(index.device)]
        target = y.target[kept]
        layout = self.cams.layout  # (N, C, *grid), as the weighting rules see them
        activation = passed.activation.detach()[kept]
        found = layer_gradients(passed, y.target, self.maps_from)
        gradients = {source: gradient[kept] for source, gradient in found.items()}
        # free the forward's graph before the explanation forwards: measured on a CPU, they run
        # about twice as slow while it is alive (and it is the largest memory of the batch)
        del passed
        for source, gradient in gradients.items():
            if self.on_layer is not None:
                self.on_layer(source, kept_index, layout(activation), layout(gradient))
            for name, cam in self.cams.maps_from_layer(activation, gradient, True).items():
                scored = class_scores(
                    self.model_forward, explanation_maps(cam, x), target, self.softmax
                )
                o[source][name], log_o[source][name] = scored.value, scored.log
                if self.unseen is not None:
                    dead_zone[source][name] = cam_dead_zone_mass(cam, self.unseen, "none")
        return scores


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
    rank, world = _rank_and_world()
    batches, total = _shard(data, labels, batch_size, rank, world)
    scored = [
        scorer(x, batch_labels, index)
        for x, batch_labels, index in tqdm(
            batches, total=total, desc="scoring", unit="batch", disable=not progress or rank != 0
        )
    ]
    local = _concatenate(scored, scorer.names, scorer.maps_from, unseen is not None)
    local["local_index"] = not isinstance(data, Tensor)
    merged = _gather(local, world) if world > 1 else local
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


def _per_method(maps_from: Sequence[str], names: Sequence[str], device: torch.device) -> PerMethod:
    """No values yet (what a batch without an image above the threshold keeps)."""
    empty = torch.empty(0, dtype=torch.float64, device=device)
    return {source: dict.fromkeys(names, empty) for source in maps_from}


def _map_nested(nested: PerMethod, func: Callable[[Tensor], Tensor]) -> PerMethod:
    return {s: {n: func(t) for n, t in by_name.items()} for s, by_name in nested.items()}


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


def _gather(local: dict[str, Any], world: int) -> dict[str, Any]:
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


def _nest(
    merged: dict[str, Any], what: str, maps_from: Sequence[str], names: list[str]
) -> PerMethod:
    return {s: {n: merged[f"{what}/{s}/{n}"] for n in names} for s in maps_from}


def _method_names(methods: Sequence[str] | Mapping[str, MethodFactory] | None) -> list[str]:
    if methods is None:
        return list(METHODS)
    if isinstance(methods, str):
        raise TypeError("methods must be a list of names or a mapping, not a single string")
    names = list(methods) if isinstance(methods, Mapping) else [method_name(m) for m in methods]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct and non-empty, got {names}")
    return names


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


Batch = tuple[Tensor, Tensor | None, Tensor]


def _shard(
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


def format_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """Rows (dicts with the same keys) as an aligned text table, or a Markdown table; floats
    with 4 significant digits."""
    columns = list(rows[0]) if rows else []
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(c), *(len(r[k]) for r in cells)) for k, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = [
    "BatchScorer",
    "BatchScores",
    "EvaluationResult",
    "LayerCallback",
    "evaluate_methods",
    "format_table",
]

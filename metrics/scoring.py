"""One batch scored with every method and metric: the step the evaluation driver repeats, and
that ``camplus compare`` streams.

Per batch: one forward that gives ``Y`` and keeps the layer's output, one backward to the
layer per kind of map (gradients of the logits and of the softmax, the two columns of Lerma &
Lucas, tables 1-2, both from that forward) that gives every method's map, and one forward per
method and kind of map for the scores ``O`` of its explanation maps: per image, 1 forward, 2
backwards to the layer and 2M forwards for M methods. The randomisation check
(:mod:`metrics.choices`) adds one forward and the same backwards on a randomised copy of the
model (:class:`metrics.sanity.RandomisedHead`), which give every method's randomised map.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from captum_camplus import LayoutSpec, upsample_and_normalize
from captum_camplus.utils import (
    MethodFactory,
    evaluation_mode,
    find_layer,
    module_device,
    resolve_methods,
)

from .choices import PAPERS, RANDOMISATION, choice_scores, chosen
from .confidence import (
    Preprocess,
    ScoreKind,
    cam_dead_zone_mass,
    class_scores,
    explanation_maps,
    keep_mask,
    model_forward,
    model_score_kind,
    target_scores,
)
from .guards import as_model_input
from .heatmaps import (
    MapsFrom,
    layer_gradients,
    layer_pass,
    maps_from_for,
    method_instances,
    relu_maps,
    score_forwards,
)
from .result import PerMethod, map_per_method
from .sanity import RandomisedHead, forward_order, rank_agreement

#: ``on_layer(maps_from, index, activations, gradients)``: the layer's ``A`` and ``g`` of the
#: images of a batch that passed the threshold (``index``: their positions in the data).
LayerCallback = Callable[[str, Tensor, Tensor, Tensor], None]


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
    #: per chosen perturbation metric's column (:mod:`metrics.choices`), like ``o``
    chosen: dict[str, PerMethod] = dataclasses.field(default_factory=dict)

    def cpu(self) -> BatchScores:
        """The same results on the CPU."""
        return BatchScores(
            index=self.index.cpu(),
            target=self.target.cpu(),
            y=self.y.cpu(),
            log_y=self.log_y.cpu(),
            kept=self.kept.cpu(),
            o=map_per_method(self.o, Tensor.cpu),
            log_o=map_per_method(self.log_o, Tensor.cpu),
            dead_zone=None
            if self.dead_zone is None
            else map_per_method(self.dead_zone, Tensor.cpu),
            chosen={k: map_per_method(v, Tensor.cpu) for k, v in self.chosen.items()},
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
        maps_from: Sequence[MapsFrom] | None = None,
        scores: ScoreKind | None = None,
        threshold: float | None = None,
        preprocess: Preprocess | None = None,
        unseen: Tensor | None = None,
        on_layer: LayerCallback | None = None,
        layout: LayoutSpec = None,
        metrics: Sequence[str] = (PAPERS,),
        seed: int = 0,
    ) -> None:
        self.names = method_names(methods)
        self.scores = model_score_kind(model, scores)
        self.maps_from = maps_from_for(self.scores, maps_from)
        self.model = model
        self.layer = find_layer(model, layer)
        factories = methods if isinstance(methods, Mapping) else self.names
        self.cams = method_instances(model, self.layer, factories, layout)
        self.methods = self.cams.methods
        self.device = module_device(model)
        self.model_forward = model_forward(model, preprocess)
        self.threshold = threshold
        self.unseen = None if unseen is None else torch.as_tensor(unseen).to(self.device)
        self.on_layer = on_layer
        every = chosen(metrics)
        self.choices = [choice for choice in every if choice.perturbation]
        self.randomised = (
            RandomisedHead(model, self.layer)
            if any(not choice.perturbation for choice in every)
            else None
        )
        self.preprocess = preprocess
        self.seed = seed

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
        ordering = (  # the first batch's forward says which layers the copy randomises
            forward_order(self.model, self.layer)
            if self.randomised is not None and self.randomised.model_copy is None
            else contextlib.nullcontext(None)
        )
        with ordering as order:
            passed = layer_pass(self.model_forward, self.layer, x)
        y = target_scores(passed.outputs, labels, self.scores)
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
        found = layer_gradients(passed, y.target, self.maps_from, self.scores)
        gradients = {source: gradient[kept] for source, gradient in found.items()}
        # free the forward's graph before the explanation forwards: measured on a CPU, they run
        # about twice as slow while it is alive (and it is the largest memory of the batch)
        del passed
        maps: dict[tuple[str, str], Tensor] = {}
        grids: dict[tuple[str, str], Tensor] = {}  # the maps on the layer's grid
        for source, gradient in gradients.items():
            if self.on_layer is not None:
                grid = (layout(activation, x.shape), layout(gradient, x.shape))
                self.on_layer(source, kept_index, *grid)
            forwards = score_forwards(self.model_forward, x, target, source, self.scores)
            for name, cam in relu_maps(self.cams, activation, gradient, x.shape, forwards).items():
                scored = class_scores(
                    self.model_forward, explanation_maps(cam, x), target, self.scores
                )
                o[source][name], log_o[source][name] = scored.value, scored.log
                if self.unseen is not None:
                    dead_zone[source][name] = cam_dead_zone_mass(cam, self.unseen, "none")
                if self.choices:
                    maps[source, name] = upsample_and_normalize(cam.detach(), x.shape[2:])
                if self.randomised is not None:
                    grids[source, name] = cam.detach()
        first = int(kept_index[0])
        if self.choices:
            scores.chosen = self._chosen(x, maps, target, first)
        if self.randomised is not None:
            scores.chosen[RANDOMISATION] = self._randomisation(x, grids, target, first, order)
        return scores

    def _randomisation(
        self,
        x: Tensor,
        grids: dict[tuple[str, str], Tensor],
        target: Tensor,
        first: int,
        order: Mapping[str, int] | None,
    ) -> PerMethod:
        """:func:`metrics.sanity.rank_agreement` of each map with the map of the randomised
        copy: one forward and one backward per kind of map on it for every method, the copy's
        layers above drawn from the run's seed and the batch's first position (as ROAD's
        noise: the same draws whichever process scores the batch)."""
        assert self.randomised is not None
        net, layer = self.randomised.draw((self.seed << 32) + first, order)
        passed = layer_pass(model_forward(net, self.preprocess), layer, x)
        found = layer_gradients(passed, target, self.maps_from, self.scores)
        activation = passed.activation.detach()
        del passed
        values: PerMethod = {source: {} for source in self.maps_from}
        for source, gradient in found.items():
            for name, cam in relu_maps(self.cams, activation, gradient, x.shape).items():
                values[source][name] = rank_agreement(grids[source, name], cam.detach())
        return values

    def _chosen(
        self, x: Tensor, maps: dict[tuple[str, str], Tensor], target: Tensor, first: int
    ) -> dict[str, PerMethod]:
        """The chosen perturbation metrics of every method and kind of map together; ROAD's
        noise seeded by the run's seed and the batch's first image, so a batch draws the same
        noise whichever process scores it, and when it is scored again."""
        values = choice_scores(
            self.model_forward,
            x,
            torch.stack(list(maps.values())),
            target,
            self.choices,
            scores=self.scores,
            seed=(self.seed << 32) + first,
        )
        return {
            column: {
                source: {name: per_image[k] for k, (s, name) in enumerate(maps) if s == source}
                for source in self.maps_from
            }
            for column, per_image in values.items()
        }


def _per_method(maps_from: Sequence[str], names: Sequence[str], device: torch.device) -> PerMethod:
    """No values yet (what a batch without an image above the threshold keeps)."""
    empty = torch.empty(0, dtype=torch.float64, device=device)
    return {source: dict.fromkeys(names, empty) for source in maps_from}


def method_names(methods: Sequence[str] | Mapping[str, MethodFactory] | None) -> list[str]:
    if isinstance(methods, str):
        raise TypeError("methods must be a list of names or a mapping, not a single string")
    names = list(methods) if isinstance(methods, Mapping) else resolve_methods(methods)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct and non-empty, got {names}")
    return names


__all__ = ["BatchScorer", "BatchScores", "LayerCallback", "method_names"]

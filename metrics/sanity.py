"""Sanity checks of the maps: cascading model-parameter randomisation with rank correlations.

A map that explains the model must change when the model's weights do. The layers with
parameters are re-initialised one at a time from the output down, each keeping those above it
random (the cascade), and after each step every method's map is compared with the trained
model's by Spearman's rank correlation, per image: near 0 passes the check, near 1 fails it.

References:
- Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018), "Sanity Checks for Saliency Maps",
  NeurIPS 2018, arXiv:1810.03292: cascading randomisation, Spearman rank correlation of the
  maps.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from captum_camplus import LayoutSpec
from captum_camplus.utils import MethodFactory, evaluation_mode, module_device

from .confidence import Preprocess, ScoreKind, as_target
from .guards import as_model_input
from .heatmaps import MapsFrom, compute_cams, model_layer


class Cascade(NamedTuple):
    """The result of :func:`cascading_randomisation`."""

    layers: list[str]  #: the layers randomised, in order (step ``s`` randomised ``layers[:s+1]``)
    correlation: dict[str, Tensor]  #: per method, ``(steps, N)`` float64 Spearman correlations


def randomised_layers(model: nn.Module) -> list[str]:
    """The modules with parameters of their own and a ``reset_parameters``, from the output down
    (the reverse of their registration order, as Adebayo et al.'s top-down cascade)."""
    names = [
        name
        for name, module in model.named_modules()
        if callable(getattr(module, "reset_parameters", None))
        and next(module.parameters(recurse=False), None) is not None
    ]
    return names[::-1]


def layers_above(
    model: nn.Module, layer: nn.Module | str, order: Mapping[str, int] | None = None
) -> list[str]:
    """The layers of :func:`randomised_layers` that come after ``layer`` and lie outside it (the
    model's head above the CAM layer, e.g. a ResNet's ``fc`` above ``layer4``), top-down.

    ``order``: the model's forward as :func:`forward_order` recorded it; given, "after" is the
    order of that forward (a layer first called once the CAM layer's output exists; a layer
    never called is not randomised). Without it, registration order stands for the forward's,
    as in Adebayo et al.'s cascade.

    Raises:
        ValueError: ``layer`` is not a module of ``model``, the recorded forward never called
            it, or no layer with parameters follows it.
    """
    layer = model_layer(model, layer)
    layer_name = next((n for n, m in model.named_modules() if m is layer), None)
    if layer_name is None or layer_name == "":
        raise ValueError("the CAM layer must be a submodule of the model, not the model itself")
    if order is None:
        order = {name: k for k, (name, _) in enumerate(model.named_modules())}
    elif layer_name not in order:
        raise ValueError(f"the model's forward never called the CAM layer {layer_name!r}")
    inside = [k for name, k in order.items() if name.startswith(layer_name + ".")]
    last = max([order[layer_name], *inside])
    above = [name for name in randomised_layers(model) if order.get(name, -1) > last]
    above.sort(key=order.__getitem__, reverse=True)
    if not above:
        raise ValueError(
            f"no layer with parameters and a reset_parameters() follows the CAM layer "
            f"{layer_name!r}, so the randomisation check has nothing to re-initialise"
        )
    return above


@contextlib.contextmanager
def forward_order(model: nn.Module, layer: nn.Module) -> Iterator[dict[str, int]]:
    """Record, during the block, each module's place in the model's forward (the order of
    first calls), the CAM ``layer`` placed where its first output is made: the ``order`` of
    :func:`layers_above`. Nothing else of the forward changes."""
    order: dict[str, int] = {}
    names = {id(module): name for name, module in model.named_modules()}
    clock = itertools.count()

    def started(module: nn.Module, args: object) -> None:
        order.setdefault(names[id(module)], next(clock))

    def finished(module: nn.Module, args: object, output: object) -> None:
        if names[id(module)] not in finished_layers:
            order[names[id(module)]] = next(clock)
            finished_layers.add(names[id(module)])

    finished_layers: set[str] = set()
    handles = [m.register_forward_pre_hook(started) for m in model.modules()]
    handles.append(layer.register_forward_hook(finished))
    try:
        yield order
    finally:
        for handle in handles:
            handle.remove()


class RandomisedHead:
    """A copy of ``model`` whose :func:`layers_above` ``layer`` are re-initialised on each
    :meth:`draw`: the randomised model of ``camplus compare --metrics randomisation``.

    The copy is made once, at the first draw (the layers below stay the model's as they were
    then), in eval mode and without parameter gradients; the layers above are those after the
    CAM layer in the ``order`` of the model's forward given to that draw (registration order
    without one; a model with no layer registered after the CAM layer is refused at
    construction). Each draw re-initialises every layer above, top-down, with its own
    ``reset_parameters()`` after ``torch.manual_seed(seed)`` (the global random state is
    restored afterwards), so a draw depends on its seed alone.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        self.model = model
        self.layers = layers_above(model, layer)
        module = model_layer(model, layer)
        self.layer_name = next(n for n, m in model.named_modules() if m is module)
        self.model_copy: nn.Module | None = None  #: made at the first draw

    def draw(
        self, seed: int, order: Mapping[str, int] | None = None
    ) -> tuple[nn.Module, nn.Module]:
        """The copy with the layers above drawn from ``seed``, and its CAM layer."""
        if self.model_copy is None:
            if order is not None:
                self.layers = layers_above(self.model, self.layer_name, order)
            self.model_copy = copy.deepcopy(self.model).eval().requires_grad_(False)
        net = self.model_copy
        device = module_device(net)
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            torch.manual_seed(seed)
            for name in self.layers:
                net.get_submodule(name).reset_parameters()  # type: ignore[operator]
        return net, net.get_submodule(self.layer_name)


def rank_agreement(trained: Tensor, randomised: Tensor) -> Tensor:
    """:func:`spearman` of each row pair, 0 where either row is constant (a constant map orders
    nothing, so keeps none of the other's order), float64 ``(N,)``."""
    rho = spearman(trained.flatten(1), randomised.flatten(1))
    return torch.nan_to_num(rho, nan=0.0)


def cascading_randomisation(
    model: nn.Module,
    layer: nn.Module | str,
    inputs: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
    depth: int | None = None,
    seed: int = 0,
    maps_from: MapsFrom = "pre-softmax",
    preprocess: Preprocess | None = None,
    layout: LayoutSpec = None,
    scores: ScoreKind = "softmax",
) -> Cascade:
    """Spearman rank correlation between each method's map of the trained model and its map
    after randomising the top ``1..depth`` layers of :func:`randomised_layers` (default: all).

    The model is not changed: a deep copy is randomised. Step ``s`` re-initialises layer ``s``
    with its own ``reset_parameters()`` after ``torch.manual_seed(seed + s)`` (the global random
    state is restored afterwards). The maps are the ReLU'd CAMs on the layer's grid, one CAM
    pass per step for all methods (:func:`metrics.heatmaps.compute_cams`); the correlation uses
    average ranks for ties and is NaN where either map is constant (an all-zero map has no
    order to compare).

    Raises:
        ValueError: for a ``depth`` outside ``1..len(randomised_layers(model))``.
    """
    names = randomised_layers(model)
    depth = len(names) if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= len(names):
        raise ValueError(
            f"depth must be an integer from 1 to {len(names)} (the model's layers with "
            f"parameters, top-down: {names[:3]}...), got {depth!r}"
        )
    layer = model_layer(model, layer)
    layer_name = next(n for n, m in model.named_modules() if m is layer)
    x = as_model_input(inputs, model)
    target = as_target(target, x.shape[0], device=module_device(model))

    def maps_of(net: nn.Module) -> dict[str, Tensor]:
        with evaluation_mode(net):
            found = compute_cams(
                net, layer_name, x, target, methods, maps_from, preprocess, layout, scores
            )
        return {name: cam.flatten(1) for name, cam in found.items()}

    trained = maps_of(model)
    twin = copy.deepcopy(model)
    correlation: dict[str, list[Tensor]] = {name: [] for name in trained}
    with torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
        for step, name in enumerate(names[:depth]):
            torch.manual_seed(seed + step)
            twin.get_submodule(name).reset_parameters()  # type: ignore[operator]
            for method, cam in maps_of(twin).items():
                correlation[method].append(spearman(trained[method], cam))
    return Cascade(names[:depth], {m: torch.stack(c) for m, c in correlation.items()})


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (average
    ranks for ties; NaN for a constant row), float64."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(ra, dim=1) * torch.linalg.vector_norm(rb, dim=1)
    return (ra * rb).sum(dim=1) / torch.where(norm > 0, norm, torch.full_like(norm, torch.nan))


def average_ranks(rows: Tensor) -> Tensor:
    """The rank (1-based) of each value in its row, tied values sharing their mean rank."""
    rows = rows.to(torch.float64)
    ranks = torch.empty_like(rows)
    for i, row in enumerate(rows):
        _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        last = counts.cumsum(0).to(torch.float64)  # the 1-based rank of each value's last copy
        ranks[i] = (last - (counts - 1) / 2)[inverse]
    return ranks


__all__ = [
    "Cascade",
    "RandomisedHead",
    "average_ranks",
    "cascading_randomisation",
    "forward_order",
    "layers_above",
    "rank_agreement",
    "randomised_layers",
    "spearman",
]

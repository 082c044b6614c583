"""CAM maps for the metrics, and an ``explain_func`` that lets Quantus call ``captum_camplus``.

``quantus.explain`` only knows a fixed list of Captum methods; :func:`cam_explain` has the
signature Quantus expects of a custom explain function, so Grad-CAM, Grad-CAM+, Grad-CAM++ and
HiResCAM can be scored by any Quantus metric and inside ``quantus.evaluate``.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from captum_camplus import (
    CamAttribution,
    LayerCams,
    MethodFactory,
    method_name,
    upsample_and_normalize,
)
from captum_camplus.base import check_attribution_inputs, layer_grid
from captum_camplus.checks import model_scores, not_called_error, unreached_layer_error
from captum_camplus.layouts import LayoutSpec, resolve_layout
from captum_camplus.modules import find_layer, module_device

from .confidence import (
    Preprocess,
    ScoreKind,
    as_target,
    check_scores,
    model_forward,
    score_kind,
)
from .guards import as_model_input, check_not_probabilities, evaluation_mode

#: Which score the CAM gradients are taken of (the two columns of Lerma & Lucas, tables 1-2).
MapsFrom = Literal["pre-softmax", "post-softmax"]
MAPS_FROM: tuple[MapsFrom, ...] = ("pre-softmax", "post-softmax")


class LayerPass(NamedTuple):
    """One forward pass of a batch that keeps the layer's output ``A`` in the graph."""

    outputs: Tensor  #: ``(N, classes)`` scores, attached to the graph of what follows ``A``
    activation: Tensor  #: ``A``, the layer's output: the leaf of that graph
    layer: nn.Module


def layer_pass(forward: Callable[[Tensor], Tensor], layer: nn.Module, inputs: Tensor) -> LayerPass:
    """Run ``forward(inputs)`` once, keeping the layer's output ``A`` in a graph of what follows.

    The scores give ``Y`` and every gradient to the layer (:func:`layer_gradient`), so the
    CAMs and the scores of the images come from one pass. ``dS/dA`` needs only the operations
    after the layer, so only those are recorded: the forward runs without gradients up to the
    layer, whose output becomes the leaf ``A`` of the graph of the rest (a pass costs little more
    than an inference forward, and the activations before the layer are not kept). As in
    Captum, the network continues with a copy of ``A`` (in-place operations after the layer
    cannot change it), and a layer called several times is read at its last call.

    Raises:
        ValueError: non-finite input, a layer the forward never calls or that returns several
            tensors, outputs that are not ``(N, classes)``.
        RuntimeError: inside ``torch.inference_mode()``.
    """
    check_attribution_inputs((inputs,), None)
    kept: list[Tensor] = []

    def keep(module: nn.Module, args: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise ValueError(
                f"the layer {type(module).__name__} returns {type(output).__name__}, not one "
                "tensor: CAMs need a layer that returns one tensor"
            )
        activation = output.detach().requires_grad_()
        kept[:] = [activation]
        torch.set_grad_enabled(True)  # record from here on; the no_grad block below restores
        return activation.clone()

    handle = layer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            outputs = forward(inputs)
    finally:
        handle.remove()
    if not kept:
        raise not_called_error(layer, forward)
    outputs = model_scores(outputs)
    check_scores(outputs)
    return LayerPass(outputs, kept[0], layer)


def layer_gradient(
    passed: LayerPass,
    target: Tensor,
    maps_from: MapsFrom,
    retain_graph: bool = False,
    scores: ScoreKind = "softmax",
) -> Tensor:
    """``g = dS/dA`` for ``S`` the target's logit (pre-softmax) or softmax probability; with
    ``scores="sigmoid"`` (binary and multi-label models) the post-softmax maps are those of the
    label's sigmoid probability, and a softmax of one output (constant 1) is refused.

    Each image's score depends on its own ``A`` only, so one ``autograd.grad`` of the summed
    scores gives every image's gradient. Pass ``retain_graph=True`` for all but the last
    gradient taken from ``passed``.
    """
    _check_maps_from(maps_from)
    if maps_from == "post-softmax" and score_kind(scores) == "sigmoid":
        selected_scores = torch.sigmoid(passed.outputs)
    elif maps_from == "post-softmax":
        if passed.outputs.shape[1] == 1:
            raise ValueError(
                "post-softmax maps of a model with one output per image (N, 1) are all zero (its "
                "softmax is 1 everywhere): pass maps_from=('pre-softmax',), or scores='sigmoid' "
                "for the maps of the sigmoid probability"
            )
        check_not_probabilities(passed.outputs)  # a softmax on top would squash them
        selected_scores = torch.softmax(passed.outputs, dim=1)
    else:
        selected_scores = passed.outputs
    selected = selected_scores.gather(1, target[:, None]).sum()
    try:
        (gradient,) = torch.autograd.grad(selected, passed.activation, retain_graph=retain_graph)
    except RuntimeError as error:
        raise (unreached_layer_error(error, passed.layer) or error) from error
    return gradient


def method_instances(
    model: nn.Module,
    layer: nn.Module,
    methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
    layout: LayoutSpec = None,
) -> LayerCams:
    """The CAM methods and the layer's layout, as :class:`captum_camplus.LayerCams` holds them
    (``.methods`` by name, ``.layout``); ``layout`` is resolved against ``model``."""
    return LayerCams(model, layer, methods=methods, layout=resolve_layout(layout, model, layer))


def cam_maps(
    methods: Mapping[str, CamAttribution], activation: Tensor, gradient: Tensor
) -> dict[str, Tensor]:
    """Each method's ReLU'd CAM (Lerma & Lucas, eq. 2; Taimeskhanov et al., definition 6) from
    the layer's ``A`` and ``g`` already on its grid (``LayerCams.layout`` applied)."""
    a, g = activation.detach(), gradient.detach()
    return {name: method.map_from_grid(a, g, True, True) for name, method in methods.items()}


def compute_cams(
    model: nn.Module,
    layer: nn.Module | str,
    inputs: Tensor,
    target: Tensor | int | Sequence[int],
    methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
    maps_from: MapsFrom = "pre-softmax",
    preprocess: Preprocess | None = None,
    layout: LayoutSpec = None,
    scores: ScoreKind = "softmax",
) -> dict[str, Tensor]:
    """Every method's ReLU'd CAM (Lerma & Lucas, eq. 2) from one forward and backward pass.

    Args:
        model, layer: The classifier and its layer (a module or its name in the model).
        inputs, target: The batch (on the model's device) and its class (one, or one per image).
        methods: Method names of :data:`captum_camplus.METHODS` (default: all) or a mapping
            name -> class/factory, as :class:`captum_camplus.LayerCams` takes them.
        maps_from: Gradients of the logits (``"pre-softmax"``) or of the softmax output.
        preprocess: See :mod:`metrics.confidence`.
        layout: The layer's layout, as :class:`captum_camplus.CamAttribution` takes it (``"tokens"``
            for a ViT, ``"channels_last"`` for a Swin stage), resolved against ``model``.
        scores: What post-softmax maps differentiate (:func:`layer_gradient`): ``"sigmoid"``
            for binary and multi-label models.

    Returns:
        Name -> ``(N, 1, *layer grid)`` maps, detached.
    """
    _check_maps_from(maps_from)
    layer = find_layer(model, layer)
    cams = method_instances(model, layer, methods, layout)
    passed = layer_pass(model_forward(model, preprocess), layer, inputs)
    target = as_target(target, *passed.outputs.shape, device=passed.outputs.device)
    gradient = layer_gradient(passed, target, maps_from, scores=scores)
    return cam_maps(
        cams.methods, *layer_grid(cams.layout, passed.activation, gradient, inputs.shape, layer)
    )


def cam_explain(
    model: nn.Module,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | int,
    *,
    method: str,
    layer: nn.Module | str,
    maps_from: MapsFrom = "pre-softmax",
    preprocess: Preprocess | None = None,
    device: str | torch.device | None = None,
    layout: LayoutSpec = None,
    scores: ScoreKind = "softmax",
) -> np.ndarray:
    """Quantus ``explain_func``: ``method``'s CAM upsampled to the inputs and min-max normalised.

    ``quantus.evaluate`` passes the key of ``xai_methods`` as ``method``, so
    ``xai_methods={"Grad-CAM++": cam_explain, "HiResCAM": cam_explain}`` with
    ``explain_func_kwargs={"layer": model.layer4}`` scores both methods.

    Args:
        method: A name of :data:`captum_camplus.METHODS`, matched leniently ("gradcam++").
        layer: The layer (module or name in ``model``).
        maps_from, preprocess, layout, scores: See :func:`compute_cams`.
        device: Accepted because Quantus passes it; the maps are computed on the model's device.

    The inputs are cast to the model's dtype; a model in training mode is run in eval mode and
    left as it was (:mod:`metrics.guards`).

    Returns:
        float32 ``(N, 1, *inputs spatial)`` maps in [0, 1].
    """
    del device  # the model's device decides
    x = as_model_input(inputs, model)  # float64 arrays (Quantus' fixtures) included
    target = as_target(targets, x.shape[0], device=module_device(model))
    name = method_name(method)
    with evaluation_mode(model):
        maps = compute_cams(model, layer, x, target, [name], maps_from, preprocess, layout, scores)[
            name
        ]
    return upsample_and_normalize(maps, x.shape[2:]).cpu().numpy().astype(np.float32)


def _check_maps_from(maps_from: str) -> None:
    if maps_from not in MAPS_FROM:
        raise ValueError(f"maps_from must be one of {MAPS_FROM}, got {maps_from!r}")


__all__ = [
    "MAPS_FROM",
    "LayerPass",
    "cam_explain",
    "cam_maps",
    "compute_cams",
    "layer_gradient",
    "layer_pass",
    "method_instances",
]

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

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from captum_camplus import Forwards, LayerCams, LayerCapture, LayoutSpec, upsample_and_normalize
from captum_camplus.utils import (
    MethodFactory,
    evaluation_mode,
    find_layer,
    method_name,
    module_device,
)

from .confidence import (
    STATED_SCORES,
    Preprocess,
    ScoreKind,
    as_target,
    check_scores,
    describe_scores,
    model_forward,
    model_score_kind,
    score_kind,
)
from .guards import as_model_input, check_not_probabilities

#: Which score the CAM gradients are taken of (the two columns of Lerma & Lucas, tables 1-2).
MapsFrom = Literal["pre-softmax", "post-softmax"]
MAPS_FROM: tuple[MapsFrom, ...] = ("pre-softmax", "post-softmax")


def maps_from_for(scores: ScoreKind, maps_from: Sequence[MapsFrom] | None = None) -> list[MapsFrom]:
    """The kinds of map to compute for scores of kind ``scores``: ``maps_from`` checked, or by
    default both for a classifier's outputs and ``["pre-softmax"]`` (the gradients of the scores
    themselves) for outputs that are scores already (:data:`~metrics.confidence.STATED_SCORES`),
    which no softmax goes on top of.

    Raises:
        ValueError: for an empty selection, an unknown kind of map, or post-softmax maps of
            scores taken as they are.
    """
    if maps_from is None:
        return ["pre-softmax"] if scores in STATED_SCORES else list(MAPS_FROM)
    if isinstance(maps_from, str) or not maps_from or any(m not in MAPS_FROM for m in maps_from):
        raise ValueError(
            f"maps_from must be a non-empty selection of {MAPS_FROM}, got {maps_from!r}"
        )
    if "post-softmax" in maps_from:
        _check_softmax_fits(scores)
    return list(maps_from)


def _check_softmax_fits(scores: ScoreKind) -> None:
    """Refuse post-softmax maps of outputs that are scores already (no softmax goes on them)."""
    if scores in STATED_SCORES:
        raise ValueError(
            f"post-softmax maps differentiate a softmax of the outputs, but these are "
            f"{describe_scores(scores)} (scores={scores!r}), scores already, which no softmax "
            "goes on top of: pass maps_from=('pre-softmax',), the maps of the scores themselves"
        )


def layer_pass(
    forward: Callable[[Tensor], Tensor], layer: nn.Module, inputs: Tensor
) -> LayerCapture:
    """One :class:`captum_camplus.LayerCapture` of a classifier: ``forward(inputs)`` once, the
    layer's output ``A`` kept as the leaf of the graph of what follows it.

    The scores give ``Y`` and every gradient to the layer (:func:`layer_gradients`), so the
    CAMs and the scores of the images come from one pass.

    Raises:
        ValueError: as :class:`~captum_camplus.LayerCapture`, and outputs that are not
            ``(N, classes)`` scores.
    """
    passed = LayerCapture(forward, layer, inputs)
    check_scores(passed.outputs)
    return passed


def target_score(
    outputs: Tensor, target: Tensor, maps_from: MapsFrom, scores: ScoreKind = "softmax"
) -> Tensor:
    """``S`` per image: the target's logit (pre-softmax) or its softmax probability; with
    ``scores="sigmoid"`` (binary and multi-label models) the post-softmax maps are those of the
    label's sigmoid probability, and a softmax of one output (constant 1) is refused, as is a
    softmax of outputs that are scores already (``"probabilities"``, ``"cosine"``), whose
    pre-softmax maps are those of the scores themselves."""
    _check_maps_from(maps_from)
    with torch.enable_grad():  # on the capture's graph, even inside torch.no_grad()
        if maps_from == "post-softmax":
            _check_softmax_fits(score_kind(scores))
        if maps_from == "post-softmax" and score_kind(scores) == "sigmoid":
            outputs = torch.sigmoid(outputs)
        elif maps_from == "post-softmax":
            if outputs.shape[1] == 1:
                raise ValueError(
                    "post-softmax maps of a model with one output per image (N, 1) are all zero "
                    "(its softmax is 1 everywhere): pass maps_from=('pre-softmax',), or "
                    "scores='sigmoid' for the maps of the sigmoid probability"
                )
            check_not_probabilities(outputs)  # a softmax on top would squash them
            outputs = torch.softmax(outputs, dim=1)
        return outputs.gather(1, target[:, None])


def layer_gradients(
    passed: LayerCapture,
    target: Tensor,
    maps_from: Sequence[MapsFrom],
    scores: ScoreKind = "softmax",
) -> dict[MapsFrom, Tensor]:
    """``g = dS/dA`` for each kind of score (:func:`target_score`) on the same forward."""
    selected = [target_score(passed.outputs, target, source, scores) for source in maps_from]
    return dict(zip(maps_from, passed.gradients(*selected), strict=True))


def layer_gradient(
    passed: LayerCapture,
    target: Tensor,
    maps_from: MapsFrom,
    retain_graph: bool = False,
    scores: ScoreKind = "softmax",
) -> Tensor:
    """``g = dS/dA`` for one kind of score; ``retain_graph=True`` keeps the graph for another."""
    score = target_score(passed.outputs, target, maps_from, scores)
    return passed.gradients(score, retain_graph=retain_graph)[0]


def method_instances(
    model: nn.Module,
    layer: nn.Module,
    methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
    layout: LayoutSpec = None,
) -> LayerCams:
    """The CAM methods and the layer's layout, as :class:`captum_camplus.LayerCams` holds them
    (``.methods`` by name, ``.layout``, ``.maps_from_layer``); ``layout`` is resolved against
    ``model``."""
    return LayerCams(model, layer, methods=methods, layout=layout)


def score_forwards(
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Tensor,
    maps_from: MapsFrom,
    scores: ScoreKind = "softmax",
) -> Forwards:
    """The model and batch behind a layer tensor, for the perturbation methods (Score-CAM,
    Ablation-CAM): their further forwards score the ``S`` of :func:`target_score`, the score
    whose gradient the gradient methods take."""

    def score(outputs: Tensor, rows_target: object) -> Tensor:
        rows = torch.as_tensor(rows_target, device=outputs.device).reshape(-1)
        return target_score(outputs, rows.expand(outputs.shape[0]), maps_from, scores)

    return Forwards(forward, (inputs,), target, score=score)


def relu_maps(
    cams: LayerCams,
    activation: Tensor,
    gradient: Tensor,
    input_shape: torch.Size,
    forwards: Forwards | None = None,
) -> dict[str, Tensor]:
    """Every method's ReLU'd map, by name, from the layer's one output ``A`` and its ``g``
    (``forwards``, from :func:`score_forwards`: for the perturbation methods).

    The maps of one layer tensor are tensors (tuples are for layers with several outputs,
    which :attr:`captum_camplus.LayerCapture.activation` refuses).
    """
    maps = cams.maps_from_layer(
        activation, gradient, True, input_shape=input_shape, forwards=forwards
    )
    tensors = {name: cam for name, cam in maps.items() if isinstance(cam, Tensor)}
    if len(tensors) != len(maps):
        raise TypeError("one layer tensor gave a tuple of maps; the metrics take one map each")
    return tensors


def compute_cams(
    model: nn.Module,
    layer: nn.Module | str,
    inputs: Tensor,
    target: Tensor | int | Sequence[int],
    methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
    maps_from: MapsFrom = "pre-softmax",
    preprocess: Preprocess | None = None,
    layout: LayoutSpec = None,
    scores: ScoreKind | None = None,
) -> dict[str, Tensor]:
    """Every method's ReLU'd CAM (Lerma & Lucas, eq. 2) from one forward and backward pass.

    Args:
        model, layer: The classifier and its layer (a module or its name in the model).
        inputs, target: The batch (on the model's device) and its class (one, or one per image).
        methods: Method names of :data:`captum_camplus.METHODS` (default:
            :data:`captum_camplus.DEFAULT_METHODS`; ``"all"``: every one) or a mapping
            name -> class/factory, as :class:`captum_camplus.LayerCams` takes them.
        maps_from: Gradients of the logits (``"pre-softmax"``) or of the softmax output.
        preprocess: See :mod:`metrics.confidence`.
        layout: The layer's layout, as :class:`captum_camplus.CamAttribution` takes it (``"tokens"``
            for a ViT, ``"channels_last"`` for a Swin stage), resolved against ``model``.
        scores: What post-softmax maps differentiate (:func:`target_score`): ``"sigmoid"``
            for binary and multi-label models; ``None`` (default): the kind ``model`` states
            (a wrapper of :mod:`captum_camplus.targets`), else ``"softmax"``
            (:func:`metrics.confidence.model_score_kind`).

    Returns:
        Name -> ``(N, 1, *layer grid)`` maps, detached.
    """
    _check_maps_from(maps_from)
    scores = model_score_kind(model, scores)
    layer = find_layer(model, layer)
    cams = method_instances(model, layer, methods, layout)
    forward = model_forward(model, preprocess)
    passed = layer_pass(forward, layer, inputs)
    n, classes = passed.outputs.shape
    selected = as_target(target, n, classes, device=passed.outputs.device)
    gradient = layer_gradient(passed, selected, maps_from, scores=scores)
    forwards = score_forwards(forward, inputs, selected, maps_from, scores)
    return relu_maps(cams, passed.activation.detach(), gradient, inputs.shape, forwards)


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
    scores: ScoreKind | None = None,
) -> np.ndarray:
    """Quantus ``explain_func``: ``method``'s CAM upsampled to the inputs and min-max normalised.

    ``quantus.evaluate`` passes the key of ``xai_methods`` as ``method``, so
    ``xai_methods={"Grad-CAM++": cam_explain, "HiResCAM": cam_explain}`` with
    ``explain_func_kwargs={"layer": model.layer4}`` scores both methods.

    Args:
        method: A name of :data:`captum_camplus.METHODS`, matched leniently ("gradcam++").
        layer: The layer (module or name in ``model``). A module of the original model also
            works on a deep copy of it (Quantus' MPRT and Random Logit), see
            :func:`model_layer`.
        maps_from, preprocess, layout, scores: See :func:`compute_cams`.
        device: Accepted because Quantus passes it; the maps are computed on the model's device.

    The inputs are cast to the model's dtype; a model in training mode is run in eval mode and
    left as it was (:mod:`metrics.guards`).

    Returns:
        float32 ``(N, 1, *inputs spatial)`` maps in [0, 1].
    """
    del device  # the model's device decides
    layer = model_layer(model, layer)  # Quantus' MPRT passes a copy of the model
    x = as_model_input(inputs, model)  # float64 arrays (Quantus' fixtures) included
    target = as_target(targets, x.shape[0], device=module_device(model))
    name = method_name(method)
    with evaluation_mode(model):
        cams = compute_cams(model, layer, x, target, [name], maps_from, preprocess, layout, scores)
    return upsample_and_normalize(cams[name], x.shape[2:]).cpu().numpy().astype(np.float32)


#: The qualified name each layer module had in the last model found to hold it: Quantus' MPRT and
#: Random Logit explain deep copies of the model, which hold copies of the module, not itself.
_LAYER_NAMES: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def model_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """``layer`` as a module of ``model``: its name resolved, a module of ``model`` itself, or,
    for a module of another model (a deep copy's original), the module of ``model`` at the same
    qualified name.

    The name is the one the module had in a model that held it, seen by an earlier call, or else
    the one module of ``model`` of the same structure (type, parameter and buffer shapes).

    Raises:
        ValueError: for a module that is not in ``model`` and whose place in it is unknown or
            ambiguous, naming the way out (pass the layer's name).
    """
    if isinstance(layer, str):
        return find_layer(model, layer)
    names = {module: name for name, module in model.named_modules()}
    if layer in names:
        _LAYER_NAMES[layer] = names[layer]
        return layer
    signature = _structure(layer)
    known = _LAYER_NAMES.get(layer)
    if known is not None:
        found = dict(model.named_modules()).get(known)
        if found is not None and _structure(found) == signature:
            return found
    twins = [name for module, name in names.items() if _structure(module) == signature]
    if len(twins) == 1:
        return model.get_submodule(twins[0])
    where = f"{len(twins)} modules of its structure" if twins else "no module of its structure"
    raise ValueError(
        f"the layer {type(layer).__name__} is not a module of this model (a copy of the model, "
        f"as Quantus' MPRT makes?), and the model has {where}: pass the layer's name in the "
        "model instead, e.g. layer='layer4' (see model.named_modules())"
    )


def _structure(module: nn.Module) -> tuple[object, ...]:
    """What a deep copy keeps of a module: its type and its parameters' and buffers' shapes."""
    tensors = (*module.named_parameters(), *module.named_buffers())
    return (type(module), tuple((name, tuple(t.shape)) for name, t in tensors))


def _check_maps_from(maps_from: str) -> None:
    if maps_from not in MAPS_FROM:
        raise ValueError(f"maps_from must be one of {MAPS_FROM}, got {maps_from!r}")


__all__ = [
    "MAPS_FROM",
    "cam_explain",
    "compute_cams",
    "layer_gradient",
    "layer_gradients",
    "layer_pass",
    "maps_from_for",
    "method_instances",
    "model_layer",
    "relu_maps",
    "score_forwards",
    "target_score",
]

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

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from captum_camplus import LayerCams, MethodFactory, method_name, upsample_and_normalize
from captum_camplus.layouts import LayoutSpec, resolve_layout
from captum_camplus.modules import find_layer, module_device

from .explanation import Preprocess, as_target, model_forward
from .guards import as_model_input, evaluation_mode

#: Which score the CAM gradients are taken of (the two columns of Lerma & Lucas, tables 1-2).
MapsFrom = Literal["pre-softmax", "post-softmax"]
MAPS_FROM: tuple[MapsFrom, ...] = ("pre-softmax", "post-softmax")


def compute_cams(
    model: nn.Module,
    layer: nn.Module | str,
    inputs: Tensor,
    target: Tensor,
    methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
    maps_from: MapsFrom = "pre-softmax",
    preprocess: Preprocess | None = None,
    layout: LayoutSpec = None,
) -> dict[str, Tensor]:
    """Every method's ReLU'd CAM (Lerma & Lucas, eq. 2) from one forward and backward pass.

    Args:
        model, layer: The classifier and its layer (a module or its name in the model).
        inputs, target: The batch (on the model's device) and one class per image.
        methods: Method names of :data:`captum_camplus.METHODS` (default: all) or a mapping
            name -> class/factory, as :class:`captum_camplus.LayerCams` takes them.
        maps_from: Gradients of the logits (``"pre-softmax"``) or of the softmax output.
        preprocess: See :mod:`metrics.explanation`.
        layout: The layer's layout, as :class:`captum_camplus.CamAttribution` takes it (``"tokens"``
            for a ViT, ``"channels_last"`` for a Swin stage), resolved against ``model``.

    Returns:
        Name -> ``(N, 1, *layer grid)`` maps.
    """
    if maps_from not in MAPS_FROM:
        raise ValueError(f"maps_from must be one of {MAPS_FROM}, got {maps_from!r}")
    forward = model_forward(model, preprocess, softmax=maps_from == "post-softmax")
    layer = find_layer(model, layer)
    layout = resolve_layout(layout, model, layer)  # from the model: forward is a wrapper
    cams = LayerCams(forward, layer, methods=methods, layout=layout)
    maps = cams.attribute(inputs, target=target, relu_attributions=True)
    for name, cam in maps.items():
        if not isinstance(cam, Tensor):
            raise ValueError(
                f"{name}: the layer returns several tensors; pick one that returns one"
            )
    return {name: cam.detach() for name, cam in maps.items()}


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
) -> np.ndarray:
    """Quantus ``explain_func``: ``method``'s CAM upsampled to the inputs and min-max normalised.

    ``quantus.evaluate`` passes the key of ``xai_methods`` as ``method``, so
    ``xai_methods={"Grad-CAM++": cam_explain, "HiResCAM": cam_explain}`` with
    ``explain_func_kwargs={"layer": model.layer4}`` scores both methods.

    Args:
        method: A name of :data:`captum_camplus.METHODS`, matched leniently ("gradcam++").
        layer: The layer (module or name in ``model``).
        maps_from, preprocess, layout: See :func:`compute_cams`.
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
        maps = compute_cams(model, layer, x, target, [name], maps_from, preprocess, layout)[name]
    return upsample_and_normalize(maps, x.shape[2:]).cpu().numpy().astype(np.float32)

"""The four maps compared in the walls experiments, as Taimeskhanov et al., table 1 computes them.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from collections.abc import Callable

from captum._utils.typing import TargetType
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import Tensor, nn

from captum_camplus import DEFAULT_METHODS, LayerCams

#: Rows of the walls tables: the default methods (the paper's), in order. Grad-CAM is Captum's
#: own ``LayerGradCam``, the reference the other rows are compared with.
WALL_METHODS = tuple(DEFAULT_METHODS)


def wall_maps(
    model: Callable[..., Tensor], layer: nn.Module, inputs: Tensor, target: TargetType
) -> dict[str, Tensor]:
    """ReLU'd ``(N, 1, h, w)`` maps of :data:`WALL_METHODS` at ``layer``, by name.

    Grad-CAM comes from :class:`captum.attr.LayerGradCam`, the others from one pass of
    :class:`captum_camplus.LayerCams`; all with ``relu_attributions=True`` as in the papers.
    """
    ours = LayerCams(model, layer, methods=[m for m in WALL_METHODS if m != "Grad-CAM"])
    maps = {
        "Grad-CAM": CaptumLayerGradCam(model, layer).attribute(
            inputs, target=target, relu_attributions=True
        )
    }
    maps.update(ours.attribute(inputs, target=target, relu_attributions=True))
    return {name: maps[name].detach() for name in WALL_METHODS}

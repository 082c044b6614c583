"""Several CAM methods from a single forward and backward pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import LayerCam, check_flags, layer_gradients_and_activations
from captum_camplus.checks import check_hookable
from captum_camplus.methods import (
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
)

#: A method class, or a factory ``(forward_func, layer, device_ids) -> LayerCam`` such as
#: ``functools.partial(LayerGradCamPlusPlus, alpha="paper")``.
MethodFactory = Callable[..., LayerCam]

#: The methods of this package by display name, in the order of 001 tables 1-2 plus HiResCAM.
METHODS: dict[str, type[LayerCam]] = {
    "Grad-CAM": LayerGradCam,
    "Grad-CAM+": LayerGradCamPlus,
    "Grad-CAM++": LayerGradCamPlusPlus,
    "HiResCAM": LayerHiResCam,
}


def method_class(name: str) -> type[LayerCam]:
    """Look a method up leniently: "Grad-CAM++", "gradcam++", "grad_cam_plus_plus" and
    "LayerGradCamPlusPlus" all name the same class."""
    wanted = _squash(name)
    for display_name, cls in METHODS.items():
        if _squash(display_name) == wanted:
            return cls
    raise ValueError(f"unknown CAM method {name!r}; choose from {', '.join(METHODS)}")


def _squash(name: str) -> str:
    squashed = "".join(c for c in name.lower() if c not in " -_").replace("plus", "+")
    return squashed.removeprefix("layer")


class LayerCams(LayerAttribution, GradientAttribution):
    """Maps of several CAM methods from one forward and one backward pass to the layer.

    Every method weights the same activations with the same gradients, so computing them together
    costs one pass instead of one per method.

    Args:
        forward_func, layer, device_ids: As in :class:`captum.attr.LayerGradCam`.
        methods: Names from :data:`METHODS` (default: all four), or a mapping from the name to
            report to a method class or factory, e.g.
            ``{"Grad-CAM++ (paper)": functools.partial(LayerGradCamPlusPlus, alpha="paper")}``.

    Example::

        >>> cams = LayerCams(model, model.layer4)
        >>> maps = cams.attribute(images, target=labels, relu_attributions=True)
        >>> maps["Grad-CAM++"].shape  # (N, 1, 7, 7)
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        methods: Iterable[str] | Mapping[str, MethodFactory] | None = None,
        device_ids: list[int] | None = None,
    ) -> None:
        check_hookable(forward_func, layer)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        if methods is None:
            methods = list(METHODS)
        if isinstance(methods, str):
            raise TypeError(
                f"methods is a list of names, got the single string {methods!r}: pass [{methods!r}]"
            )
        if not isinstance(methods, Mapping):
            methods = {name: method_class(name) for name in methods}
        if not methods:
            raise ValueError("LayerCams needs at least one method")
        self.methods: dict[str, LayerCam] = {
            name: factory(forward_func, layer, device_ids) for name, factory in methods.items()
        }

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor | tuple[Tensor, ...]]:
        """Each method's map, by name; arguments and map shapes as :meth:`LayerCam.attribute`."""
        check_flags(relu_attributions=relu_attributions, attr_dim_summation=attr_dim_summation)
        gradients, activations = layer_gradients_and_activations(
            self, inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        return {
            name: method.maps_from_layer(
                activations, gradients, relu_attributions, attr_dim_summation
            )
            for name, method in self.methods.items()
        }


__all__ = ["METHODS", "LayerCams", "MethodFactory", "method_class"]

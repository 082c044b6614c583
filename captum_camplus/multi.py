"""Several CAM methods from a single forward and backward pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from captum._utils.common import _format_output
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import (
    CamAttribution,
    check_flags,
    first_input,
    layer_gradients_and_activations,
    layer_grid,
)
from captum_camplus.checks import check_hookable
from captum_camplus.layouts import DefaultLayout, LayoutSpec, resolve_layout
from captum_camplus.registry import METHODS, method_class, method_name

#: A method class, or a factory ``(forward_func, layer, device_ids) -> CamAttribution`` such as
#: ``functools.partial(LayerGradCamPlusPlus, alpha="paper")``.
MethodFactory = Callable[..., CamAttribution]


class LayerCams(LayerAttribution, GradientAttribution):
    """Maps of several CAM methods from one forward and one backward pass to the layer.

    Every method weights the same activations with the same gradients, so computing them together
    costs one pass instead of one per method.

    Args:
        forward_func, layer, device_ids: As in :class:`captum.attr.LayerGradCam`.
        methods: Names of registered methods (:data:`captum_camplus.METHODS`; default: all of
            them; maps come back under their display names), or a mapping from the name to
            report to a method class or factory, e.g.
            ``{"Grad-CAM++ (paper)": functools.partial(LayerGradCamPlusPlus, alpha="paper")}``.
        layout: As in :class:`CamAttribution`; applied once, for every method (so set it here,
            not in a method factory).

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
        *,
        layout: LayoutSpec = None,
    ) -> None:
        check_hookable(forward_func, layer)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.layout = resolve_layout(layout, forward_func, layer)
        if isinstance(methods, str):
            raise TypeError(f"methods is a list of names, not one string: pass [{methods!r}]")
        if methods is None:
            methods = dict(METHODS)
        if not isinstance(methods, Mapping):
            methods = {method_name(name): method_class(name) for name in methods}
        if not methods:
            raise ValueError("LayerCams needs at least one method")
        self.methods: dict[str, CamAttribution] = {
            name: factory(forward_func, layer, device_ids) for name, factory in methods.items()
        }
        for name, method in self.methods.items():
            if not isinstance(method.layout, DefaultLayout):
                raise ValueError(
                    f"method {name!r} was built with layout {method.layout}, which LayerCams "
                    "would not apply: pass layout= to LayerCams instead"
                )

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
        """Each method's map, by name; arguments and shapes as :meth:`CamAttribution.attribute`."""
        check_flags(relu_attributions=relu_attributions, attr_dim_summation=attr_dim_summation)
        gradients, activations = layer_gradients_and_activations(
            self, inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        shape = first_input(inputs).shape
        grids = [
            layer_grid(self.layout, a, g, shape, self.layer)
            for a, g in zip(activations, gradients, strict=True)
        ]
        return {
            name: _format_output(
                len(grids) > 1,
                tuple(
                    method.map_from_grid(a, g, relu_attributions, attr_dim_summation)
                    for a, g in grids
                ),
            )
            for name, method in self.methods.items()
        }


__all__ = ["LayerCams", "MethodFactory"]

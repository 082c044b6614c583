"""Several CAM methods from a single forward and backward pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

import torch
from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _select_targets,
)
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import (
    CamAttribution,
    Forwards,
    check_flags,
    first_input,
    layer_gradients_and_activations,
    layer_grid,
)
from captum_camplus.capture import LayerCapture
from captum_camplus.checks import (
    check_grad_kwargs,
    check_hookable,
    check_inputs,
    check_output,
    check_target,
)
from captum_camplus.layouts import DefaultLayout, InputShape, LayoutSpec, resolve_layout
from captum_camplus.registry import method_class, resolve_methods

#: A method class, or a factory ``(forward_func, layer, device_ids) -> CamAttribution`` such as
#: ``functools.partial(LayerGradCamPlusPlus, alpha="paper")``.
MethodFactory = Callable[..., CamAttribution]


class LayerCams(LayerAttribution, GradientAttribution):
    """Maps of several CAM methods from one forward and one backward pass to the layer.

    Every method weights the same activations with the same gradients, so computing them together
    costs one pass instead of one per method. The pass is a :class:`LayerCapture` (the forward
    records only what follows the layer), except for the layer's input, ``grad_kwargs`` and
    ``DataParallel`` models, which take Captum's ``compute_layer_gradients_and_eval``.
    :meth:`maps_from_layer` gives every method's map from an ``A`` and ``g`` already at hand.

    Args:
        forward_func, layer, device_ids: As in :class:`captum.attr.LayerGradCam`.
        methods: Names of registered methods (:data:`captum_camplus.METHODS`; default:
            :data:`captum_camplus.DEFAULT_METHODS`, ``"all"``: every registered method; maps
            come back under their display names), or a mapping from the name to
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
        if not isinstance(methods, Mapping):
            methods = {name: method_class(name) for name in resolve_methods(methods)}
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
        check_flags(attribute_to_layer_input=attribute_to_layer_input)
        check_grad_kwargs(grad_kwargs)
        if attribute_to_layer_input or grad_kwargs or self._data_parallel():
            # the layer's input, autograd options, replicas: Captum's pass handles them
            gradients, activations = layer_gradients_and_activations(
                self, inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
            )
        else:
            activations, gradients = self._capture(inputs, target, additional_forward_args)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        forwards = Forwards(self.forward_func, _format_tensor_into_tuples(inputs), target, extra)
        return self.maps_from_layer(
            activations,
            gradients,
            relu_attributions,
            attr_dim_summation,
            input_shape=first_input(inputs).shape,
            forwards=forwards,
        )

    def _capture(
        self, inputs: Tensor | tuple[Tensor, ...], target: TargetType, additional_forward_args: Any
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """``(A,), (g,)`` from one :class:`LayerCapture`: the forward records only what
        follows the layer, and the maps hold no graph."""
        check_inputs(inputs)
        inputs = _format_tensor_into_tuples(inputs)
        batch_size = inputs[0].shape[0]
        target = check_target(target, batch_size)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        capture = LayerCapture(self.forward_func, self.layer, inputs, extra)
        check_output(capture.outputs, target, batch_size)
        with torch.enable_grad():  # the score joins the graph, even inside torch.no_grad()
            score = _select_targets(capture.outputs, target)
        (gradients,) = capture.layer_gradients(score)
        return tuple(a.detach() for a in capture.activations), gradients

    def _data_parallel(self) -> bool:
        return self.device_ids is not None or hasattr(self.forward_func, "device_ids")

    @overload
    def maps_from_layer(
        self,
        activation: Tensor,
        gradient: Tensor,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        *,
        input_shape: InputShape = None,
        forwards: Forwards | None = None,
    ) -> dict[str, Tensor]: ...

    @overload
    def maps_from_layer(
        self,
        activation: tuple[Tensor, ...],
        gradient: tuple[Tensor, ...],
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        *,
        input_shape: InputShape = None,
        forwards: Forwards | None = None,
    ) -> dict[str, Tensor | tuple[Tensor, ...]]: ...

    def maps_from_layer(
        self,
        activation: Tensor | tuple[Tensor, ...],
        gradient: Tensor | tuple[Tensor, ...],
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        *,
        input_shape: InputShape = None,
        forwards: Forwards | None = None,
    ) -> dict[str, Tensor] | dict[str, Tensor | tuple[Tensor, ...]]:
        """Every method's map, by name, from the layer's ``A`` and ``g = dS/dA`` (no pass).

        The one loop over the methods: :meth:`attribute` and the metrics use it, e.g. on what a
        :class:`~captum_camplus.LayerCapture` captured. The layout is applied here, once per
        tensor, for every method. ``A`` and ``g`` are layer tensors (or tuples of them, one per
        layer output, as Captum gives them; the maps are then tuples too); the options are those
        of :meth:`CamAttribution.attribute`. ``input_shape``, the shape of the input the tensors
        came from, lets the layout establish the layer's grid (see :mod:`captum_camplus.layouts`);
        a gradient that is zero on the whole grid warns. For one ``A`` tensor the maps are
        tensors (typed so); for tuples, tuples when the layer gave several tensors.
        ``forwards`` (the model and batch behind ``A``) is what the perturbation methods
        (Score-CAM, Ablation-CAM) need; :meth:`attribute` passes it.
        """
        check_flags(relu_attributions=relu_attributions, attr_dim_summation=attr_dim_summation)
        several = isinstance(activation, tuple)
        activations = activation if isinstance(activation, tuple) else (activation,)
        gradients = gradient if isinstance(gradient, tuple) else (gradient,)
        grids = [
            layer_grid(self.layout, a, g, input_shape, self.layer)
            for a, g in zip(activations, gradients, strict=True)
        ]
        return {
            name: _format_output(
                several and len(grids) > 1,
                tuple(
                    method.map_from_grid(a, g, relu_attributions, attr_dim_summation, forwards)
                    for a, g in grids
                ),
            )
            for name, method in self.methods.items()
        }


__all__ = ["LayerCams", "MethodFactory"]

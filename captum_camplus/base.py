"""The Captum plumbing shared by every CAM method: hooks, targets, formatting, device and dtype.

A CAM method on this base states only its weighting rule, :meth:`CamAttribution.weights`: given the
layer's activations ``A`` and the gradients ``g = dS/dA`` of the differentiated score ``S``, it
returns weights ``W`` that broadcast against ``A``, and the map is ``sum_k W^k (.) A^k``
(Lerma & Lucas, eq. 2 without its ReLU, which Captum leaves to ``relu_attributions``).

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _select_targets,
)
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_camplus.checks import (
    check_flag,
    check_grad_kwargs,
    check_hookable,
    check_inputs,
    check_target,
    checked_forward,
    layer_output_error,
    not_called_error,
    unreached_layer_error,
    warn_if_no_gradient,
)
from captum_camplus.layouts import InputShape, Layout, LayoutSpec, resolve_layout
from captum_camplus.precision import finite_map, working_dtype


@dataclass(frozen=True)
class Forwards:
    """The model and the batch behind a layer tensor, for the methods whose weights come from
    further forwards of the model (Score-CAM, Ablation-CAM); gradient methods ignore it.

    ``score(outputs, target)`` turns the model's outputs for some rows into one score per row:
    by default Captum's selection of ``target`` (the logit of a classifier).
    """

    forward_func: Callable[..., Any]
    inputs: tuple[Tensor, ...]
    target: TargetType
    additional_forward_args: tuple[Any, ...] = ()
    score: Callable[[Tensor, TargetType], Tensor] = _select_targets

    def rows(self, index: Tensor) -> tuple[tuple[Tensor, ...], TargetType, tuple[Any, ...]]:
        """Inputs, target and extra arguments of the examples ``index`` (repeats allowed)."""
        n = self.inputs[0].shape[0]

        def pick(value: Any) -> Any:
            return value[index] if isinstance(value, Tensor) and value.shape[:1] == (n,) else value

        return (
            tuple(pick(t) for t in self.inputs),
            self.target_of(index),
            tuple(pick(a) for a in self.additional_forward_args),
        )

    def target_of(self, index: Tensor) -> TargetType:
        """The target of the examples ``index`` (a shared target as it is)."""
        target = self.target
        if isinstance(target, list) or (isinstance(target, Tensor) and target.numel() > 1):
            target = torch.as_tensor(target, device=index.device)[index]
        return target


class CamAttribution(LayerAttribution, GradientAttribution, abc.ABC):
    """Base class of the class-activation-map layer attributions.

    Subclasses implement :meth:`weights` only. The constructor and :meth:`attribute` have the
    signature and output conventions of :class:`captum.attr.LayerGradCam`, so a subclass is a
    drop-in replacement for it (and works inside :class:`captum.attr.NoiseTunnel`).

    Args:
        forward_func: The model, or any callable returning the scores to explain.
        layer: The layer whose activations are weighted, with output (or input, with
            ``attribute_to_layer_input=True``) of shape ``(N, C, *spatial)``, or another shape
            that ``layout`` turns into it. As in Captum, a ``(N, C)`` output is accepted and
            treated as a single position; the helpers that need a spatial map
            (:func:`upsample_and_normalize`, the metrics) reject it.
        device_ids: Device ids for a model wrapped in ``DataParallel`` (as in Captum).
        layout: How the layer tensor becomes ``(N, C, *grid)`` before the weighting rule, for
            activations and gradients alike (:func:`~captum_camplus.layouts.resolve_layout`):
            ``None`` (channels first), ``"tokens"`` (a ViT's tokens, prefix tokens dropped,
            grid from the model), ``"channels_last"`` (a timm Swin stage), ``"auto"`` (as the
            model's attributes say), a :class:`~captum_camplus.layouts.Layout` or a callable.
    """

    #: ``"gradient"``: the map comes from ``A`` and ``g = dS/dA`` (differentiable with
    #: ``create_graph``); ``"perturbation"``: the weights come from further forwards of the model.
    family: ClassVar[str] = "gradient"

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        *,
        layout: LayoutSpec = None,
    ) -> None:
        check_hookable(forward_func, layer)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.layout = resolve_layout(layout, forward_func, layer)

    @abc.abstractmethod
    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Return the weights ``W`` of the method for one layer tensor.

        Args:
            activation: ``A``, shape ``(N, C, *spatial)``, float32 or wider.
            gradient: ``g = dS/dA``, same shape and dtype.

        Returns:
            A tensor broadcastable to ``A``: per channel ``(N, C, 1, ...)`` or per element.
        """

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
    ) -> Tensor | tuple[Tensor, ...]:
        r"""Compute the class-activation map of ``target`` at the layer.

        One forward pass and one ``autograd.grad`` down to the layer; no parameter gradients.

        Args:
            inputs: Input tensor, or tuple of tensors, whose first dimension is the batch.
            target: Output indices to explain, in any form Captum accepts: an int, a tuple for
                outputs with more than two dimensions, or one entry per example (list or 1-D
                tensor of length N).
            additional_forward_args: Extra arguments passed to ``forward_func`` after ``inputs``.
            attribute_to_layer_input: Weight the layer's input instead of its output.
            relu_attributions: Apply a ReLU to the map, as Lerma & Lucas, eq. 2 does. Off by
                default, as in :class:`captum.attr.LayerGradCam`.
            attr_dim_summation: Sum over the channel dimension (the CAM). If False, return the
                weighted activations per channel, shape ``(N, C, *spatial)``.
            grad_kwargs: Keyword arguments for ``torch.autograd.grad``.

        Returns:
            A tensor of shape ``(N, 1, *spatial)`` (``(N, C, *spatial)`` without channel
            summation) in the layer's dtype, or a tuple of them when the layer has several
            output tensors.
        """
        check_flags(relu_attributions=relu_attributions, attr_dim_summation=attr_dim_summation)
        gradients, activations = layer_gradients_and_activations(
            self, inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        return self.maps_from_layer(
            activations,
            gradients,
            relu_attributions,
            attr_dim_summation,
            input_shape=first_input(inputs).shape,
        )

    def maps_from_layer(
        self,
        activations: tuple[Tensor, ...],
        gradients: tuple[Tensor, ...],
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        *,
        input_shape: InputShape = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """:meth:`map_from_layer` for each layer tensor, in Captum's output format."""
        maps = tuple(
            self.map_from_layer(
                a, g, relu_attributions, attr_dim_summation, input_shape=input_shape
            )
            for a, g in zip(activations, gradients, strict=True)
        )
        return _format_output(len(maps) > 1, maps)

    def map_from_layer(
        self,
        activation: Tensor,
        gradient: Tensor,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        *,
        input_shape: InputShape = None,
    ) -> Tensor:
        """Turn one layer tensor and its gradient into this method's map (no forward pass).

        ``input_shape``, the shape of the input they came from, lets the layout check the batch
        and read the grid (:mod:`captum_camplus.layouts`); without it the model's attributes
        alone decide.
        """
        a, g = layer_grid(self.layout, activation, gradient, input_shape, self.layer)
        return self.map_from_grid(a, g, relu_attributions, attr_dim_summation)

    def map_from_grid(
        self,
        activation: Tensor,
        gradient: Tensor,
        relu: bool,
        sum_: bool,
        forwards: Forwards | None = None,
    ) -> Tensor:
        """:meth:`map_from_layer` for tensors already in ``(N, C, *grid)`` (layout applied), with
        ``relu_attributions`` and ``attr_dim_summation`` given as ``relu`` and ``sum_``
        (``forwards``: for the methods that run the model again; ignored here).

        Computed in float32 for half-precision layers, again in float64 if that overflows, and
        returned in the layer's dtype unless the map does not fit it (see
        :func:`captum_camplus.precision.finite_map`): never NaN or inf for finite tensors.
        """

        def compute(dtype: torch.dtype) -> Tensor:
            a, g = activation.to(dtype), gradient.to(dtype)
            if type(self).terms is not CamAttribution.terms:  # a map that is no weighting of A
                terms = self.terms(a, g)
                cam = terms.sum(dim=1, keepdim=True) if sum_ else terms
                return torch.relu(cam) if relu else cam
            weights = self.weights(a, g)
            if sum_ and a.dim() > 2 and all(s == 1 for s in weights.shape[2:]):
                cam = channel_sum(a, weights.flatten(1))
            elif sum_:
                cam = (weights * a).sum(dim=1, keepdim=True)
            else:
                cam = weights * a
            return torch.relu(cam) if relu else cam

        return finite_map(compute, activation, gradient, self.working_dtype(activation.dtype))

    def working_dtype(self, layer_dtype: torch.dtype) -> torch.dtype:
        """The dtype the map of a ``layer_dtype`` layer is computed in (float32 for half
        precision); a method whose options need a wider one says so here."""
        return working_dtype(layer_dtype)

    def terms(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """The per-channel terms ``T^k`` of the map ``L = sum_k T^k``: ``W^k (.) A^k``, from
        :meth:`weights`. A method whose map is no weighting of ``A`` (EigenCAM's centred
        variant) overrides this instead; shapes as in :meth:`weights`, result ``A``'s shape."""
        return self.weights(activation, gradient) * activation


def layer_gradients_and_activations(
    attribution: LayerAttribution,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    attribute_to_layer_input: bool = False,
    grad_kwargs: dict[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Check the inputs, then one forward and one backward to ``attribution.layer``.

    Captum's ``compute_layer_gradients_and_eval``, with clear errors for bad input. The
    activations come back detached unless ``grad_kwargs`` asks for ``create_graph``, so the forward
    graph below the layer is freed before the map arithmetic (Captum's LayerGradCam keeps it alive
    in its maps' ``grad_fn``).
    """
    check_inputs(inputs)
    check_flags(attribute_to_layer_input=attribute_to_layer_input)
    check_grad_kwargs(grad_kwargs)
    batch: tuple[Tensor, ...] = _format_tensor_into_tuples(inputs)  # captum is untyped: Any
    target = check_attribution_inputs(batch, target)
    additional_forward_args = _format_additional_forward_args(additional_forward_args)
    try:
        gradients, activations = compute_layer_gradients_and_eval(
            checked_forward(attribution.forward_func, target, batch[0].shape[0]),
            attribution.layer,
            batch,
            target,
            additional_forward_args,
            device_ids=attribution.device_ids,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
    except AssertionError as error:
        if "Forward hook did not obtain any outputs" in str(error):
            raise not_called_error(attribution.layer, attribution.forward_func) from error
        if "Given input is not a torch.Tensor" in str(error):  # Captum's hook on (tensor, None)
            forward_inputs = (*batch, *(additional_forward_args or ()))
            raise layer_output_error(
                attribution.forward_func, attribution.layer, forward_inputs
            ) from error
        raise
    except RuntimeError as error:
        raise (unreached_layer_error(error, attribution.layer) or error) from error
    if not (grad_kwargs or {}).get("create_graph", False):
        activations = tuple(a.detach() for a in activations)
    return gradients, activations


def layer_grid(
    layout: Layout, activation: Tensor, gradient: Tensor, input_shape: InputShape, layer: Module
) -> tuple[Tensor, Tensor]:
    """``A`` and ``g`` on the layer's grid ``(N, C, *grid)`` by ``layout``, with a warning when
    ``g`` is zero everywhere on it (:func:`checks.warn_if_no_gradient`)."""
    grid_activation = layout(activation, input_shape)
    grid_gradient = layout(gradient, input_shape)
    warn_if_no_gradient(grid_gradient, layer)
    return grid_activation, grid_gradient


def first_input(inputs: Tensor | Sequence[Tensor]) -> Tensor:
    """The input whose shape the layer's layout is read against (the first of a tuple)."""
    return inputs if isinstance(inputs, Tensor) else inputs[0]


def check_flags(**flags: Any) -> None:
    """The boolean options of ``attribute`` are booleans (a string "no" would read as True)."""
    for name, value in flags.items():
        check_flag(name, value)


def check_attribution_inputs(inputs: Sequence[Tensor], target: TargetType) -> TargetType:
    """Reject what would give a wrong map: inference mode, non-finite input, bad targets.

    Returns the target with numpy values converted (see :func:`checks.check_target`).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "CAM attributions need gradients, which torch.inference_mode() disables: "
            "call attribute() outside the inference_mode block (torch.no_grad() is fine)"
        )
    for index, tensor in enumerate(inputs):
        if tensor.is_inference():
            raise RuntimeError(
                f"input {index} was created under torch.inference_mode() and cannot take part in "
                "autograd: pass tensor.clone() made outside inference mode"
            )
    target = check_target(target, inputs[0].shape[0])
    _check_finite(inputs)
    return target


def _check_finite(inputs: Sequence[Tensor]) -> None:
    floating = {i: t for i, t in enumerate(inputs) if t.is_floating_point() or t.is_complex()}
    if not floating:
        return
    finite = torch.stack([torch.isfinite(t).all() for t in floating.values()])
    if not bool(finite.all()):  # the one host synchronisation of the check
        bad = [i for i, ok in zip(floating, finite.tolist(), strict=True) if not ok]
        raise ValueError(
            f"inputs {bad} contain NaN or inf values; CAMs of such inputs are undefined"
        )


def channel_sum(activation: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k A^k``, shape ``(N, 1, *grid)``, for channel weights ``w`` of shape ``(N, C)``.

    One batched matrix product, with no ``(N, C, *grid)`` temporary (``torch.einsum`` of the same
    sum runs several times slower on a CPU).
    """
    n, c = activation.shape[:2]
    flat = activation.reshape(n, c, -1)
    return (weights.unsqueeze(1) @ flat).reshape(n, 1, *activation.shape[2:])


def spatial_dims(tensor: Tensor) -> tuple[int, ...]:
    """The dimensions after batch and channel."""
    return tuple(range(2, tensor.dim()))


def spatial_sum(tensor: Tensor) -> Tensor:
    """Sum over the spatial positions, kept as size-1 dims; a (N, C) tensor is one position."""
    dims = spatial_dims(tensor)
    return tensor.sum(dim=dims, keepdim=True) if dims else tensor


def spatial_mean(tensor: Tensor) -> Tensor:
    """Mean over the spatial positions (Z of Lerma & Lucas, eq. 1), kept as size-1 dims."""
    dims = spatial_dims(tensor)
    return tensor.mean(dim=dims, keepdim=True) if dims else tensor

"""Grad-CAM++ (Chattopadhay et al. 2018) with the alpha variants discussed in Lerma & Lucas.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- "Discussion: Computation analysis of GradCAM++", an unsigned, undated note on the closed form
  of the Grad-CAM++ alphas and its assumptions (no arXiv id).
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized gradient-based
  visual explanations for deep convolutional networks", WACV, arXiv:1710.11063.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import CamAttribution, layer_grid, spatial_sum
from captum_camplus.checks import check_flag, check_positive
from captum_camplus.layouts import InputShape, LayoutSpec
from captum_camplus.precision import working_precision
from captum_camplus.registry import register_method

AlphaForm = Literal["simplified", "paper", "constant"]
Stabilizer = Literal["clamp", "zero", "none"]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class AlphaOptions:
    r"""How Grad-CAM++'s alphas are computed (see :class:`LayerGradCamPlusPlus` for each option).

    Attributes:
        form: ``"simplified"`` (Lerma & Lucas, eq. 13), ``"paper"`` (eq. 9) or ``"constant"``
            (1/2, eq. 14).
        exponent_scale: :math:`\lambda` of eq. 12; positive.
        normalize: Divide alpha by its sum over each channel's positions (reference code).
        stabilizer: ``"clamp"``, ``"zero"`` or ``"none"``: what happens where the denominator
            :math:`2 + \lambda S_k g` is below ``min_denominator``.
        min_denominator: The stabilizer's threshold; positive.
    """

    form: AlphaForm = "simplified"
    exponent_scale: float = 1.0
    normalize: bool = False
    stabilizer: Stabilizer = "clamp"
    min_denominator: float = 2.0

    def __post_init__(self) -> None:
        _check_choice("alpha", self.form, ("simplified", "paper", "constant"))
        _check_choice("stabilizer", self.stabilizer, ("clamp", "zero", "none"))
        object.__setattr__(self, "normalize", check_flag("normalize_alpha", self.normalize))
        for name in ("exponent_scale", "min_denominator"):  # inf could only give NaN or 0 maps
            object.__setattr__(self, name, check_positive(name, getattr(self, name)))

    def working_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """``dtype``, or float64 if ``exponent_scale`` or ``min_denominator`` lies outside its
        normal range (their products would overflow or vanish there)."""
        if dtype.is_floating_point and dtype != torch.float64:
            finfo = torch.finfo(dtype)
            if not all(
                finfo.tiny <= v <= finfo.max for v in (self.exponent_scale, self.min_denominator)
            ):
                return torch.float64
        return dtype

    def min_denominator_in(self, dtype: torch.dtype) -> float:
        """``min_denominator`` within the dtype's range (a larger one clamps every entry)."""
        return min(self.min_denominator, torch.finfo(dtype).max)


@dataclass(frozen=True)
class AlphaDiagnostics:
    """What Grad-CAM++ saw in one layer tensor: counts and ranges of its alphas.

    Only entries with a positive gradient reach the weights (Lerma & Lucas, eq. 4), so only they
    are counted; with none, the ranges are empty (min ``inf``, max ``-inf``). The fields are 0-d
    tensors on the layer's device, detached; ``summary()`` brings them to the host. The alphas
    themselves are :meth:`LayerGradCamPlusPlus.alphas` (for histograms such as Lerma & Lucas,
    figures 3-4).

    Attributes:
        positive: Number of entries with ``g > 0``.
        unstable: Entries with ``g > 0`` whose denominator ``2 + lambda S_k g`` is below
            ``min_denominator``: near a pole of eq. 13 or past it (alpha negative).
        raw_min, raw_max: Range of alpha by the formula, before the stabilizer (Lerma & Lucas,
            section 3.4, report -1.4e6 and 5.6e5 on ImageNetV2).
        min, max: Range of the alphas actually used.
    """

    positive: Tensor
    unstable: Tensor
    raw_min: Tensor
    raw_max: Tensor
    min: Tensor
    max: Tensor

    def summary(self) -> dict[str, float]:
        """The counts and ranges as Python numbers (one host synchronisation)."""
        names = ("positive", "unstable", "raw_min", "raw_max", "min", "max")
        values = torch.stack([getattr(self, name).double() for name in names]).tolist()
        return dict(zip(names, values, strict=True))


def grad_cam_plus_plus_alphas(
    scaled_sums: Tensor, positive_gradient: Tensor, options: AlphaOptions = AlphaOptions()
) -> Tensor:
    r"""The alphas of Grad-CAM++ (Lerma & Lucas, eq. 9 / 12 / 13): a pure function.

    Args:
        scaled_sums: :math:`\lambda S_k`, shape ``(N, C, 1, ...)`` (per channel).
        positive_gradient: :math:`\mathrm{ReLU}(g)`, the layer's shape.
        options: The alpha form, scale and stabilizer.

    Returns:
        A new tensor of alphas, exactly 0 where ``ReLU(g) = 0``.
    """
    alphas = _alphas_where_positive(scaled_sums, positive_gradient, options)
    zero = positive_gradient == 0
    alphas = alphas.masked_fill(zero, 0.0) if _records(alphas) else alphas.masked_fill_(zero, 0.0)
    return _finish(alphas, options)


def alpha_diagnostics(
    activation: Tensor, gradient: Tensor, options: AlphaOptions = AlphaOptions()
) -> AlphaDiagnostics:
    """:class:`AlphaDiagnostics` of a layer tensor ``A`` and its gradient ``g`` (no model pass)."""
    return _diagnose(*_alpha_inputs(activation, gradient, options), options)


@register_method("Grad-CAM++", "gradcampp")
class LayerGradCamPlusPlus(CamAttribution):
    r"""Grad-CAM++: channel weights are alpha-weighted positive gradients (Lerma & Lucas, eq. 4).

    .. math::
        w_k = \sum_{ij} \alpha^k_{ij}\, \mathrm{ReLU}(g^k_{ij}),\qquad
        g^k_{ij} = \frac{\partial S}{\partial A^k_{ij}},\qquad S_k = \sum_{ab} A^k_{ab}

    The score ``S`` is what ``forward_func`` returns for the target (the pre-softmax logit for a
    classifier, as the closed form assumes: Lerma & Lucas, eq. 9, and the derivation note).
    ``S_k`` and the sum of ``w_k`` run over the positions of the grid that ``layout`` gives: for
    a transformer's tokens, the patch grid only, prefix tokens (class, distillation, registers)
    excluded.

    Args:
        forward_func, layer, device_ids, layout: As in :class:`captum_camplus.CamAttribution`.
        alpha: How alpha is computed:

            * ``"simplified"`` (default), Lerma & Lucas, eq. 13 with the scale of eq. 12:
              :math:`\alpha = 1 / (2 + \lambda S_k g)`. No powers of ``g``, so nothing under- or
              overflows.
            * ``"paper"``, eq. 9 / eq. 12 as published:
              :math:`\alpha = g^2 / (2 g^2 + \lambda S_k g^3)`. Equal to the simplified form
              wherever ``g != 0``, but ``g^3`` underflows for tiny gradients; where the
              computed numerator is 0, alpha is 0.
            * ``"constant"``: :math:`\alpha = 1/2`, the limit Lerma & Lucas observe (eq. 14).
              The map is then exactly half of Grad-CAM+'s times ``Z``, so proportional to it.

            In every form alpha is exactly 0 where ``g = 0`` (the paper's convention for 0/0) and
            no epsilon is added to a denominator (an absolute epsilon such as 1e-6 dominates the
            denominator at typical gradient sizes and turns the weights into ``sum ReLU(g)^3``).
        exponent_scale: :math:`\lambda` of eq. 12 (assuming ``Y = exp(lambda S)``); the paper's
            choice is 1. Must be positive.
        normalize_alpha: Divide alpha by its sum over the positions of each channel, as the
            authors' reference code does (in no equation); a channel whose sum is 0 is left as is.
        stabilizer: What happens to an entry with ``g > 0`` whose denominator
            :math:`d = 2 + \lambda S_k g` is below ``min_denominator`` (possible only when
            ``S_k < 0``, i.e. signed activations such as a conv before its ReLU, BatchNorm,
            SiLU/GELU or LayerNorm outputs):

            * ``"clamp"`` (default): :math:`\alpha = 1 / \max(d, d_{min})`. With the default
              ``min_denominator=2`` this is :math:`\alpha = \min(1/2, \alpha)`: alpha stays in
              ``(0, 1/2]``, is continuous in :math:`S_k g`, and is untouched wherever
              :math:`S_k g \ge 0`, which includes every layer that follows a ReLU. An entry past
              the pole would otherwise get a large or negative alpha with no meaning as a pixel
              importance (Lerma & Lucas, section 3.4), and one such entry can dominate a channel.
            * ``"zero"``: drop such entries (alpha = 0).
            * ``"none"``: the formula as is. A denominator of exactly 0 then raises
              ``FloatingPointError`` rather than returning inf or NaN.
        min_denominator: The threshold ``d_min`` of the stabilizer (default 2). Positive.

    The alphas are :func:`grad_cam_plus_plus_alphas` of ``(lambda S_k, ReLU(g))``. After
    :meth:`attribute`, :attr:`last_diagnostics` holds their :class:`AlphaDiagnostics` (six
    numbers: the instance keeps no layer-sized tensor and no graph); :meth:`alphas`,
    :meth:`raw_alphas` and :func:`alpha_diagnostics` give the alphas and their diagnostics for an
    ``(A, g)`` at hand.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        *,
        alpha: AlphaForm = "simplified",
        exponent_scale: float = 1.0,
        normalize_alpha: bool = False,
        stabilizer: Stabilizer = "clamp",
        min_denominator: float = 2.0,
        layout: LayoutSpec = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, layout=layout)
        self.options = AlphaOptions(
            alpha, exponent_scale, normalize_alpha, stabilizer, min_denominator
        )
        #: :class:`AlphaDiagnostics` of the last :meth:`attribute` or :meth:`map_from_layer` (of
        #: its last layer tensor), or None before one: six numbers, no layer-sized tensor.
        self.last_diagnostics: AlphaDiagnostics | None = None

    def working_dtype(self, layer_dtype: torch.dtype) -> torch.dtype:
        """float64 when the options lie outside the usual working dtype's range."""
        return self.options.working_dtype(super().working_dtype(layer_dtype))

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        scaled_sums, positive_gradient = _alpha_inputs(activation, gradient, self.options)
        # sum_ij alpha ReLU(g): alphas at g <= 0 are multiplied by 0, so they need not be zeroed
        if self.options.normalize:
            alphas = grad_cam_plus_plus_alphas(scaled_sums, positive_gradient, self.options)
        else:
            alphas = _alphas_where_positive(scaled_sums, positive_gradient, self.options)
        if _records(alphas):
            return spatial_sum(alphas * positive_gradient)
        return spatial_sum(alphas.mul_(positive_gradient))

    def map_from_layer(
        self,
        activation: Tensor,
        gradient: Tensor,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        *,
        input_shape: InputShape = None,
    ) -> Tensor:
        """:meth:`CamAttribution.map_from_layer`, and :attr:`last_diagnostics` of its alphas.

        So :meth:`attribute` records them; :class:`~captum_camplus.LayerCams`, which weights on
        the grid directly, does not (they cost many times the weights): there, call
        :func:`alpha_diagnostics` on the ``(A, g)`` at hand.
        """
        grid_activation, grid_gradient = layer_grid(
            self.layout, activation, gradient, input_shape, self.layer
        )
        cam = self.map_from_grid(
            grid_activation, grid_gradient, relu_attributions, attr_dim_summation
        )
        dtype = self.working_dtype(grid_activation.dtype)
        self.last_diagnostics = alpha_diagnostics(
            grid_activation.to(dtype), grid_gradient.to(dtype), self.options
        )
        return cam

    def alphas(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """The alphas of this instance's options for ``(A, g)`` (0 where ``g <= 0``)."""
        return grad_cam_plus_plus_alphas(
            *_alpha_inputs(activation, gradient, self.options), self.options
        )

    def raw_alphas(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """The alphas of eq. 13 before any stabilizer or normalisation, ``1 / (2 + lambda S_k
        g)`` where ``g > 0`` (0 elsewhere and at an exact pole): their range is Lerma & Lucas'
        section 3.4 (-1.4e6 to 5.6e5 on ImageNetV2), e.g. for a histogram of the tails."""
        return _raw_alphas(*_alpha_inputs(activation, gradient, self.options))


def _alpha_inputs(
    activation: Tensor, gradient: Tensor, options: AlphaOptions
) -> tuple[Tensor, Tensor]:
    """``(lambda S_k, ReLU(g))`` of a layer tensor, in the working precision.

    An overflow of ``lambda S_k`` is clamped to the dtype's largest value: ``inf * 0`` at
    ``g = 0`` would be NaN, while the clamped value gives the right alpha there and, where
    ``g > 0``, one within ``1 / max`` of the true one. A NaN ``S_k`` (partial sums overflowing
    both ways) stays NaN, so the map is computed again in float64
    (:func:`captum_camplus.precision.finite_map`).
    """
    activation, gradient = working_precision(activation), working_precision(gradient)
    big = torch.finfo(activation.dtype).max
    scaled_sums = (options.exponent_scale * spatial_sum(activation)).clamp_(min=-big, max=big)
    return scaled_sums, gradient.clamp(min=0)


def _alphas_where_positive(
    scaled_sums: Tensor, positive_gradient: Tensor, options: AlphaOptions
) -> Tensor:
    """Alphas, correct where ``g > 0`` and finite elsewhere, in a new tensor.

    Working on ``ReLU(g)`` makes the denominator exactly 2 where ``g <= 0``, and the arithmetic
    runs in place on one new tensor: the layer tensor is large and each temporary costs a pass
    over memory. Where autograd records it (``create_graph=True``), it runs out of place.
    """
    if options.form == "constant":
        return (positive_gradient > 0).to(positive_gradient.dtype).mul_(0.5)
    d_min = options.min_denominator_in(positive_gradient.dtype)
    denominator = (scaled_sums * positive_gradient).add_(2)  # 2 + lambda S_k g (eq. 12-13)
    if options.stabilizer == "none" and bool((denominator == 0).any()):  # syncs in this mode only
        raise FloatingPointError(
            "Grad-CAM++ alpha denominator 2 + lambda * S_k * g is exactly 0 for some "
            "positive gradient; use stabilizer='clamp' or 'zero'"
        )
    if options.form == "paper":
        g2 = positive_gradient.square()
        paper_denominator = g2.mul(2).addcmul_(scaled_sums, positive_gradient.pow(3))
        alphas = _divide_or_zero(g2, paper_denominator)
        # where g^2 or lambda S_k g^3 leave the dtype's range, eq. 9 gives 0, inf/inf or
        # inf - inf; eq. 13, equal to it for g != 0, has no powers
        alphas = torch.where(paper_denominator.isfinite(), alphas, denominator.reciprocal())
        if options.stabilizer != "none":
            replacement = 1 / d_min if options.stabilizer == "clamp" else 0.0
            alphas.masked_fill_(denominator < d_min, replacement)
        return alphas
    if _records(denominator):  # the backward needs each intermediate: no in-place arithmetic
        if options.stabilizer == "clamp":
            denominator = denominator.clamp(min=d_min)
        elif options.stabilizer == "zero":
            denominator = denominator.masked_fill(denominator < d_min, float("inf"))
        return denominator.reciprocal()
    if options.stabilizer == "clamp":  # 1 / max(d, d_min)
        denominator.clamp_(min=d_min)
    elif options.stabilizer == "zero":  # 1 / inf = 0
        denominator.masked_fill_(denominator < d_min, float("inf"))
    return denominator.reciprocal_()  # eq. 13


def _finish(alphas: Tensor, options: AlphaOptions) -> Tensor:
    """The reference code's per-channel normalisation, if asked for (alphas already 0 at g <= 0)."""
    if options.normalize:
        total = spatial_sum(alphas)
        divisor = torch.where(total == 0, torch.ones_like(total), total)
        return alphas / divisor if _records(alphas) else alphas.div_(divisor)
    return alphas


def _records(tensor: Tensor) -> bool:
    """Whether autograd records arithmetic on ``tensor`` (maps with ``create_graph=True``):
    then in-place operations would overwrite what its backward needs."""
    return tensor.requires_grad and torch.is_grad_enabled()


def _raw_alphas(scaled_sums: Tensor, positive_gradient: Tensor) -> Tensor:
    """Eq. 13 without stabilizer: ``1 / (2 + lambda S_k g)`` where ``g > 0``, else 0."""
    positive = (positive_gradient > 0).to(positive_gradient.dtype)
    return _divide_or_zero(positive, 2 + scaled_sums * positive_gradient)


def _divide_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where both are non-zero, else exactly 0 (no inf/NaN formed).

    The paper's 0/0 := 0 at g = 0 (Lerma & Lucas, after eq. 9) also covers a ``g^2`` that
    underflows.
    """
    keep = (numerator != 0) & (denominator != 0)
    safe = torch.where(keep, denominator, torch.ones_like(denominator))
    return (numerator / safe).masked_fill_(~keep, 0.0)


@torch.no_grad()  # numbers only: they hold no graph
def _diagnose(
    scaled_sums: Tensor, positive_gradient: Tensor, options: AlphaOptions
) -> AlphaDiagnostics:
    """The counts and ranges over the entries with ``g > 0``, as 0-d tensors (no host sync)."""
    positive = positive_gradient > 0
    denominator = (scaled_sums * positive_gradient).add_(2)  # 2 + lambda S_k g (eq. 13)
    unstable = denominator < options.min_denominator_in(denominator.dtype)
    raw = torch.where(denominator == 0, 0.0, denominator.reciprocal())  # eq. 13, 0 at a pole
    used = grad_cam_plus_plus_alphas(scaled_sums, positive_gradient, options)
    not_positive = ~positive
    raw_min, raw_max = _extrema(raw, not_positive)
    used_min, used_max = _extrema(used, not_positive)
    return AlphaDiagnostics(
        positive=positive.sum(),
        unstable=unstable.logical_and_(positive).sum(),
        raw_min=raw_min,
        raw_max=raw_max,
        min=used_min,
        max=used_max,
    )


def _extrema(values: Tensor, excluded: Tensor) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of ``values`` outside ``excluded`` (``inf``, ``-inf`` if none); overwrites
    ``values``."""
    smallest = values.masked_fill(excluded, float("inf")).amin()
    return smallest, values.masked_fill_(excluded, float("-inf")).amax()

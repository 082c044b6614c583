"""Grad-CAM++ (Chattopadhay et al. 2018) with the alpha variants discussed in Lerma & Lucas.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- "Discussion: Computation analysis of GradCAM++", a note on the closed form of the Grad-CAM++
  alphas and its assumptions.
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

from captum_camplus.base import CamAttribution, spatial_sum
from captum_camplus.checks import check_flag, check_positive
from captum_camplus.registry import register_method

AlphaForm = Literal["simplified", "paper", "constant"]
Stabilizer = Literal["clamp", "zero", "none"]


@dataclass(frozen=True)
class AlphaDiagnostics:
    """What the last Grad-CAM++ call saw, from the ``S_k`` and ``ReLU(g)`` it kept (no model pass).

    Only entries with a positive gradient reach the weights (Lerma & Lucas, eq. 4), so only they are
    counted; with none, the ranges are empty (min ``inf``, max ``-inf``). The fields are tensors on
    the model's device; ``summary()`` brings them to the host.

    Attributes:
        positive: Number of entries with ``g > 0``.
        unstable: Entries with ``g > 0`` whose denominator ``2 + lambda S_k g`` is below
            ``min_denominator``: near a pole of Lerma & Lucas, eq. 13 or past it (alpha negative).
        raw_min, raw_max: Range of alpha by the formula, before the stabilizer (Lerma & Lucas,
        section 3.4
            reports -1.4e6 and 5.6e5 on ImageNetV2).
        min, max: Range of the alphas actually used.
        alphas: The alphas used (same shape as the layer), kept only with ``keep_alphas=True``.
    """

    positive: Tensor
    unstable: Tensor
    raw_min: Tensor
    raw_max: Tensor
    min: Tensor
    max: Tensor
    alphas: Tensor | None = None

    def summary(self) -> dict[str, float]:
        """The counts and ranges as Python numbers (one host synchronisation)."""
        values = torch.stack(
            [
                t.double()
                for t in (
                    self.positive,
                    self.unstable,
                    self.raw_min,
                    self.raw_max,
                    self.min,
                    self.max,
                )
            ]
        ).tolist()
        names = ("positive", "unstable", "raw_min", "raw_max", "min", "max")
        return dict(zip(names, values, strict=True))


@register_method("Grad-CAM++", "gradcampp")
class LayerGradCamPlusPlus(CamAttribution):
    r"""Grad-CAM++: channel weights are alpha-weighted positive gradients (Lerma & Lucas, eq. 4).

    .. math::
        w_k = \sum_{ij} \alpha^k_{ij}\, \mathrm{ReLU}(g^k_{ij}),\qquad
        g^k_{ij} = \frac{\partial S}{\partial A^k_{ij}},\qquad S_k = \sum_{ab} A^k_{ab}

    The score ``S`` is what ``forward_func`` returns for the target (the pre-softmax logit for a
    classifier, as the closed form assumes: Lerma & Lucas, eq. 9, the Grad-CAM++ derivation note).

    Args:
        forward_func, layer, device_ids: As in :class:`captum.attr.LayerGradCam`.
        alpha: How alpha is computed:

            * ``"simplified"`` (default), Lerma & Lucas, eq. 13 with the scale of eq. 12:
              :math:`\alpha = 1 / (2 + \lambda S_k g)`. No powers of ``g``, so nothing under- or
              overflows.
            * ``"paper"``, Lerma & Lucas, eq. 9 / eq. 12 as published:
              :math:`\alpha = g^2 / (2 g^2 + \lambda S_k g^3)`. Equal to the simplified form
              wherever ``g != 0``, but ``g^3`` underflows for tiny gradients; where the
              computed numerator is 0, alpha is 0.
            * ``"constant"``: :math:`\alpha = 1/2`, the limit Lerma & Lucas observe (Lerma & Lucas,
              eq. 14). The map is then exactly half of Grad-CAM+'s times ``Z``, so proportional to
              it.

            In every form alpha is exactly 0 where ``g = 0`` (the paper's convention for 0/0) and
            no epsilon is added to a denominator (an absolute epsilon such as 1e-6 dominates the
            denominator at typical gradient sizes and turns the weights into ``sum ReLU(g)^3``).
        exponent_scale: :math:`\lambda` of Lerma & Lucas, eq. 12 (assuming ``Y = exp(lambda S)``);
        the paper's
            choice is 1. Must be positive.
        normalize_alpha: Divide alpha by its sum over the positions of each channel, as the
            authors' reference code does (in no equation); a channel whose sum is 0 is left as is.
        stabilizer: What happens to an entry with ``g > 0`` whose denominator
            :math:`d = 2 + \lambda S_k g` is below ``min_denominator`` (possible only when
            ``S_k < 0``, i.e. signed activations such as a conv before its ReLU, BatchNorm,
            SiLU/GELU or LayerNorm outputs):

            * ``"clamp"`` (default): :math:`\alpha = 1 / \max(d, d_{min})`. With the default
              ``min_denominator=2`` this is :math:`\alpha = \min(1/2, \alpha)`: alpha stays in ``(0,
              1/2]``, is continuous in :math:`S_k g`, and is untouched wherever :math:`S_k g \ge 0`,
              which includes every layer that follows a ReLU. An entry past the pole would otherwise
              get a large or negative alpha with no meaning as a pixel importance (Lerma & Lucas,
              section 3.4), and one such entry can dominate a channel.
            * ``"zero"``: drop such entries (alpha = 0).
            * ``"none"``: the formula as is. A denominator of exactly 0 then raises
              ``FloatingPointError`` rather than returning inf or NaN.
        min_denominator: The threshold ``d_min`` of the stabilizer (default 2). Positive.
        keep_alphas: Keep the last call's alpha tensor in ``last_diagnostics.alphas`` (for
            histograms such as Lerma & Lucas, figures 3-4).

    After each call, :attr:`last_diagnostics` holds an :class:`AlphaDiagnostics`.
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
        keep_alphas: bool = False,
    ) -> None:
        super().__init__(forward_func, layer, device_ids)
        _check_choice("alpha", alpha, ("simplified", "paper", "constant"))
        _check_choice("stabilizer", stabilizer, ("clamp", "zero", "none"))
        self.alpha = alpha
        self.exponent_scale = check_positive(
            "exponent_scale", exponent_scale, " (lambda of Lerma & Lucas, eq. 12)"
        )
        self.normalize_alpha = check_flag("normalize_alpha", normalize_alpha)
        self.stabilizer = stabilizer
        self.min_denominator = check_positive("min_denominator", min_denominator)
        self.keep_alphas = check_flag("keep_alphas", keep_alphas)
        self._last_call: tuple[Tensor, Tensor, Tensor | None] | None = None

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        lam_s = self._lambda_s(activation)
        positive_part = gradient.clamp(min=0)
        # Alphas at g <= 0 multiply ReLU(g) = 0; they are zeroed only where someone reads them.
        alphas = self._alphas(lam_s, positive_part, exact_zeros=self.keep_alphas)
        self._last_call = (lam_s, positive_part, alphas if self.keep_alphas else None)
        weighted = alphas * positive_part if self.keep_alphas else alphas.mul_(positive_part)
        return spatial_sum(weighted)

    def alphas(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """The alphas (Lerma & Lucas, eq. 9 / 12 / 13) with these options (0 where g <= 0)."""
        return self._alphas(self._lambda_s(activation), gradient.clamp(min=0))

    def _lambda_s(self, activation: Tensor) -> Tensor:
        """``lambda S_k``, an overflow clamped to the dtype's largest value: ``inf * 0`` at
        ``g = 0`` would be NaN, while the clamped value gives alpha 1/2 there and, where
        ``g > 0``, an alpha within ``1 / max`` of the true one (both below float resolution).
        A NaN ``S_k`` (partial sums overflowing both ways) stays NaN, so the map is recomputed
        in float64 (:func:`captum_camplus.precision.finite_map`)."""
        big = torch.finfo(activation.dtype).max
        return (self.exponent_scale * spatial_sum(activation)).clamp_(min=-big, max=big)

    @property
    def last_diagnostics(self) -> AlphaDiagnostics | None:
        """:class:`AlphaDiagnostics` of the last call, computed when first read (no extra pass)."""
        if self._last_call is None:
            return None
        lam_s, positive_part, alphas = self._last_call
        if alphas is None:
            alphas = self._alphas(lam_s, positive_part)
        d_min = self._min_denominator(lam_s.dtype)
        return _diagnose(lam_s, positive_part, alphas, d_min, self.keep_alphas)

    def working_dtype(self, layer_dtype: torch.dtype) -> torch.dtype:
        """float64 when ``exponent_scale`` or ``min_denominator`` lie outside the normal range
        of the usual working dtype (their products would overflow or vanish there)."""
        working = super().working_dtype(layer_dtype)
        if working.is_floating_point and working != torch.float64:
            finfo = torch.finfo(working)
            options = (self.exponent_scale, self.min_denominator)
            if not all(finfo.tiny <= value <= finfo.max for value in options):
                return torch.float64
        return working

    def _min_denominator(self, dtype: torch.dtype) -> float:
        """``min_denominator`` within the dtype's range (a larger one clamps everything)."""
        return min(self.min_denominator, torch.finfo(dtype).max)

    def _alphas(self, lam_s: Tensor, positive_part: Tensor, exact_zeros: bool = True) -> Tensor:
        """Alphas where g > 0 from ``lambda S_k`` and ``ReLU(g)``; exactly 0 elsewhere unless
        ``exact_zeros`` is False (then finite values that ReLU(g) = 0 cancels).

        Working on ``ReLU(g)`` makes the denominator exactly 2 where ``g <= 0``, and the arithmetic
        runs in place: the layer tensor is large and each temporary costs a pass over memory.
        """
        if self.alpha == "constant":
            return (positive_part > 0).to(positive_part.dtype).mul_(0.5)
        d_min = self._min_denominator(lam_s.dtype)
        denominator = (lam_s * positive_part).add_(2)  # 2 + lambda S_k g (eq. 12-13)
        if self.stabilizer == "none" and bool((denominator == 0).any()):  # syncs in this mode only
            raise FloatingPointError(
                "Grad-CAM++ alpha denominator 2 + lambda * S_k * g is exactly 0 for some "
                "positive gradient; use stabilizer='clamp' or 'zero'"
            )
        if self.alpha == "paper":
            g2 = positive_part.square()
            paper_denominator = g2.mul(2).addcmul_(lam_s, positive_part.pow(3))
            alphas = _divide_or_zero(g2, paper_denominator)  # eq. 9
            # where g^2 or lambda S_k g^3 leave the dtype's range, eq. 9 gives 0, inf/inf or
            # inf - inf; eq. 13, equal to it for g != 0, has no powers
            alphas = torch.where(paper_denominator.isfinite(), alphas, denominator.reciprocal())
            if self.stabilizer != "none":
                replacement = 1 / d_min if self.stabilizer == "clamp" else 0.0
                alphas.masked_fill_(denominator < d_min, replacement)
        else:
            if self.stabilizer == "clamp":  # 1 / max(d, d_min)
                denominator.clamp_(min=d_min)
            elif self.stabilizer == "zero":  # 1 / inf = 0
                denominator.masked_fill_(denominator < d_min, float("inf"))
            alphas = denominator.reciprocal_()  # eq. 13
        if exact_zeros or self.normalize_alpha:
            alphas.masked_fill_(positive_part == 0, 0.0)
        if self.normalize_alpha:
            total = spatial_sum(alphas)
            alphas.div_(torch.where(total == 0, torch.ones_like(total), total))
        return alphas


def _divide_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where both are non-zero, else exactly 0 (no inf/NaN formed).

    The paper's 0/0 := 0 at g = 0 (Lerma & Lucas, after eq. 9) also covers a ``g^2`` that
    underflows.
    """
    keep = (numerator != 0) & (denominator != 0)
    safe = torch.where(keep, denominator, torch.ones_like(denominator))
    return (numerator / safe).masked_fill_(~keep, 0.0)


def _diagnose(
    lam_s: Tensor, positive_part: Tensor, alphas: Tensor, min_denominator: float, keep: bool
) -> AlphaDiagnostics:
    positive = positive_part > 0
    denominator = 2 + lam_s * positive_part
    raw = _divide_or_zero(positive.to(alphas.dtype), denominator)  # eq. 13 without stabilizer
    inf = torch.tensor(float("inf"), dtype=alphas.dtype, device=alphas.device)

    def extrema(values: Tensor) -> tuple[Tensor, Tensor]:
        return torch.where(positive, values, inf).amin(), torch.where(positive, values, -inf).amax()

    raw_min, raw_max = extrema(raw)
    used_min, used_max = extrema(alphas)
    return AlphaDiagnostics(
        positive=positive.sum(),
        unstable=(positive & (denominator < min_denominator)).sum(),
        raw_min=raw_min,
        raw_max=raw_max,
        min=used_min,
        max=used_max,
        alphas=alphas.detach() if keep else None,
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")

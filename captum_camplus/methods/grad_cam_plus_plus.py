"""Grad-CAM++ (Chattopadhay et al. 2018) with the alpha variants discussed in paper 001."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import LayerCam, spatial_sum

AlphaForm = Literal["simplified", "paper", "constant"]
Stabilizer = Literal["clamp", "zero", "none"]


@dataclass(frozen=True)
class AlphaDiagnostics:
    """What the last Grad-CAM++ call saw, read from tensors it computed anyway (no extra pass).

    Only entries with a positive gradient reach the weights (001 eq. 4), so only they are counted.
    The fields are tensors on the model's device; ``summary()`` brings them to the host.

    Attributes:
        positive: Number of entries with ``g > 0``.
        unstable: Entries with ``g > 0`` whose denominator ``2 + lambda S_k g`` is below
            ``min_denominator``: near a pole of 001 eq. 13 or past it (alpha negative).
        raw_min, raw_max: Range of alpha by the formula, before the stabilizer (001 section 3.4
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


class LayerGradCamPlusPlus(LayerCam):
    r"""Grad-CAM++: channel weights are alpha-weighted positive gradients (001 eq. 4).

    .. math::
        w_k = \sum_{ij} \alpha^k_{ij}\, \mathrm{ReLU}(g^k_{ij}),\qquad
        g^k_{ij} = \frac{\partial S}{\partial A^k_{ij}},\qquad S_k = \sum_{ab} A^k_{ab}

    The score ``S`` is what ``forward_func`` returns for the target (the pre-softmax logit for a
    classifier, as the closed form assumes: 001 eq. 9, paper 002).

    Args:
        forward_func, layer, device_ids: As in :class:`captum.attr.LayerGradCam`.
        alpha: How alpha is computed:

            * ``"simplified"`` (default), 001 eq. 13 with the scale of eq. 12:
              :math:`\alpha = 1 / (2 + \lambda S_k g)`. No powers of ``g``, so nothing under- or
              overflows.
            * ``"paper"``, 001 eq. 9 / eq. 12 as published:
              :math:`\alpha = g^2 / (2 g^2 + \lambda S_k g^3)`. Equal to the simplified form
              wherever ``g != 0``, but ``g^3`` underflows for tiny gradients; where the
              computed numerator is 0, alpha is 0.
            * ``"constant"``: :math:`\alpha = 1/2`, the limit Lerma & Lucas observe (001 eq. 14).
              The map is then exactly half of Grad-CAM+'s times ``Z``, so proportional to it.

            In every form alpha is exactly 0 where ``g = 0`` (the paper's convention for 0/0) and
            no epsilon is added to a denominator (an absolute epsilon such as 1e-6 dominates the
            denominator at typical gradient sizes and turns the weights into ``sum ReLU(g)^3``).
        exponent_scale: :math:`\lambda` of 001 eq. 12 (assuming ``Y = exp(lambda S)``); the paper's
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
              :math:`S_k g \ge 0`, which includes every layer that follows a ReLU. An entry
              past the pole would otherwise get a large or negative alpha with no meaning as a
              pixel importance (001 section 3.4), and one such entry can dominate a channel.
            * ``"zero"``: drop such entries (alpha = 0).
            * ``"none"``: the formula as is. A denominator of exactly 0 then raises
              ``FloatingPointError`` rather than returning inf or NaN.
        min_denominator: The threshold ``d_min`` of the stabilizer (default 2). Positive.
        keep_alphas: Keep the last call's alpha tensor in ``last_diagnostics.alphas`` (for
            histograms such as 001 figures 3-4).

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
        if not exponent_scale > 0:
            raise ValueError(
                f"exponent_scale (lambda of 001 eq. 12) must be > 0, got {exponent_scale}"
            )
        if not min_denominator > 0:
            raise ValueError(f"min_denominator must be > 0, got {min_denominator}")
        self.alpha = alpha
        self.exponent_scale = float(exponent_scale)
        self.normalize_alpha = normalize_alpha
        self.stabilizer = stabilizer
        self.min_denominator = float(min_denominator)
        self.keep_alphas = keep_alphas
        self._last_diagnostics: AlphaDiagnostics | None = None
        self._pending: tuple[Tensor, Tensor] | None = None  # (lambda S_k, g) of the last call

    @property
    def last_diagnostics(self) -> AlphaDiagnostics | None:
        """What the last call saw; computed when first read (the call keeps ``g`` until then)."""
        if self._pending is not None:
            lam_s, gradient = self._pending
            self._pending = None
            self._alphas(lam_s, gradient)
        return self._last_diagnostics

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        lam_s = self.exponent_scale * spatial_sum(activation)
        positive_part = gradient.clamp(min=0)
        if self._default_options():
            # alpha = 1 / max(2 + lambda S_k g, d_min) (eq. 13 with the clamp) where g > 0; where
            # g <= 0 it multiplies ReLU(g) = 0, so it is not formed. Four passes over the layer
            # instead of ~30; the diagnostics wait until last_diagnostics is read.
            self._pending, self._last_diagnostics = (lam_s, gradient), None
            denominator = (lam_s * positive_part).add_(2).clamp_(min=self.min_denominator)
            return spatial_sum(positive_part.div_(denominator))
        self._pending = None
        return spatial_sum(self._alphas(lam_s, gradient) * positive_part)

    def _default_options(self) -> bool:
        return (
            self.alpha == "simplified"
            and self.stabilizer == "clamp"
            and not self.normalize_alpha
            and not self.keep_alphas
        )

    def alphas(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """The alphas of 001 eq. 9 / 12 / 13 with the chosen options; records diagnostics."""
        self._pending = None
        return self._alphas(self.exponent_scale * spatial_sum(activation), gradient)

    def _alphas(self, lam_s: Tensor, gradient: Tensor) -> Tensor:
        positive = gradient > 0  # alpha multiplies ReLU(g): only these entries reach the weights
        denominator = 2 + lam_s * gradient
        unstable = positive & (denominator < self.min_denominator)
        raw = _safe_reciprocal(denominator, positive)

        if self.alpha == "constant":
            alphas = torch.where(positive, 0.5, 0.0).to(gradient.dtype)
        elif self.alpha == "paper":
            g2 = gradient.square()
            alphas = _safe_divide(g2, 2 * g2 + lam_s * gradient.pow(3), positive)
        else:
            alphas = raw

        if self.alpha != "constant":
            if self.stabilizer == "clamp":
                alphas = torch.where(unstable, 1.0 / self.min_denominator, alphas)
            elif self.stabilizer == "zero":
                alphas = torch.where(unstable, 0.0, alphas)
            elif bool((positive & (denominator == 0)).any()):  # host sync in this mode only
                raise FloatingPointError(
                    "Grad-CAM++ alpha denominator 2 + lambda * S_k * g is exactly 0 for some "
                    "positive gradient; use stabilizer='clamp' or 'zero'"
                )
        if self.normalize_alpha:
            total = spatial_sum(alphas)
            alphas = alphas / torch.where(total == 0, 1.0, total)

        self._last_diagnostics = _diagnose(positive, unstable, raw, alphas, self.keep_alphas)
        return alphas


def _safe_reciprocal(denominator: Tensor, keep: Tensor) -> Tensor:
    return _safe_divide(torch.ones_like(denominator), denominator, keep)


def _safe_divide(numerator: Tensor, denominator: Tensor, keep: Tensor) -> Tensor:
    """numerator / denominator where ``keep`` and both are non-zero, else exactly 0.

    The masked-out denominators are replaced by 1 before dividing, so no inf or NaN is ever formed
    (``torch.where`` alone would still compute them and pass NaN to anomaly checks).
    """
    keep = keep & (numerator != 0) & (denominator != 0)
    safe = torch.where(keep, denominator, torch.ones_like(denominator))
    return torch.where(keep, numerator / safe, torch.zeros_like(numerator))


def _diagnose(
    positive: Tensor, unstable: Tensor, raw: Tensor, alphas: Tensor, keep_alphas: bool
) -> AlphaDiagnostics:
    inf = torch.tensor(float("inf"), dtype=raw.dtype, device=raw.device)

    def extrema(values: Tensor) -> tuple[Tensor, Tensor]:
        low = torch.where(positive, values, inf).amin()
        high = torch.where(positive, values, -inf).amax()
        return low, high

    raw_min, raw_max = extrema(raw)
    used_min, used_max = extrema(alphas)
    return AlphaDiagnostics(
        positive=positive.sum(),
        unstable=unstable.sum(),
        raw_min=raw_min,
        raw_max=raw_max,
        min=used_min,
        max=used_max,
        alphas=alphas.detach() if keep_alphas else None,
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")

"""Turning layer maps into image-sized heatmaps, on the maps' device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_camplus.precision import working_precision

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def require_spatial(maps: Tensor, what: str = "map") -> None:
    """Raise a clear error for a tensor without spatial dims (a layer such as ``nn.Linear``)."""
    if maps.dim() < 3:
        raise ValueError(
            f"the {what} has shape {tuple(maps.shape)}, without spatial dimensions: CAM maps need "
            "a layer whose output is (N, C, *spatial), such as a convolution (for a transformer, "
            "reshape its tokens to (N, C, H, W) first)"
        )


#: A map whose spread (max - min) is at most this many units in the last place of its largest
#: magnitude is constant: interpolating a constant map adds up to 3 ulps of rounding noise, which
#: min-max normalisation would otherwise stretch to [0, 1] speckle.
ROUNDING_ULPS = 8


def normalize_maps(maps: Tensor, precision: torch.dtype | None = None) -> Tensor:
    """Min-max normalise each map of a batch to [0, 1].

    A map whose values are equal up to rounding (spread <= :data:`ROUNDING_ULPS` ulps of its
    largest magnitude, in ``precision``) is constant: all ones if its values are positive, all
    zeros otherwise, so an all-zero map stays zero and no map is ever NaN. Maps of any finite
    magnitude work (each is scaled by a power of two first, which min-max does not see).

    Args:
        maps: ``(N, ...)`` maps.
        precision: The dtype the maps were computed in, whose rounding decides what is constant
            (default: the maps' dtype).

    Raises:
        ValueError: if a map contains NaN or inf.
    """
    _require_finite(maps)
    if not maps.is_floating_point():
        maps = maps.double()
    return _min_max(_unit_scale(maps), precision or maps.dtype)


def _require_finite(maps: Tensor) -> None:
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("the maps contain NaN or inf values; they cannot be normalised")


def _min_max(maps: Tensor, precision: torch.dtype) -> Tensor:
    """Per-map min-max of maps of magnitude about 1 (see :func:`normalize_maps`)."""
    if maps.numel() == 0:
        return maps.clone()
    shape = (-1, *[1] * (maps.dim() - 1))
    low, high = (v.view(shape) for v in maps.flatten(start_dim=1).aminmax(dim=1))
    spread = high - low
    varies = spread > ROUNDING_ULPS * torch.finfo(precision).eps * torch.maximum(-low, high)
    scaled = (maps - low).div_(torch.where(varies, spread, torch.ones_like(spread)))
    flat_value = (high > 0).to(maps.dtype)  # a constant map: 1 if positive, else 0
    return torch.where(varies, scaled, flat_value)


def _unit_scale(maps: Tensor) -> Tensor:
    """Each map times a power of two that brings its largest magnitude into [1/2, 2).

    Exact for normal numbers, so the min-max result is unchanged; it keeps ``max - min`` and
    the interpolation sums from overflowing (maps near the dtype's largest value) and tiny maps
    out of subnormal range. The factor is applied in two halves, each representable.
    """
    if maps.numel() == 0:
        return maps
    peak = maps.flatten(start_dim=1).abs().amax(dim=1).view(-1, *[1] * (maps.dim() - 1))
    exponent = torch.where(peak > 0, torch.log2(peak).round(), torch.zeros_like(peak))
    half = torch.trunc(exponent / 2)
    return maps * torch.exp2(-half) * torch.exp2(half - exponent)  # left to right


def upsample_and_normalize(maps: Tensor, size: Sequence[int] | torch.Size) -> Tensor:
    """Upsample CAM maps to ``size`` and min-max normalise each to [0, 1], on their device.

    A constant map, including any 1 x 1 map, stays constant: the rounding noise of the
    interpolation is not stretched into speckle (see :func:`normalize_maps`).

    Args:
        maps: ``(N, 1, *spatial)`` maps, as :meth:`CamAttribution.attribute` returns them (``(N, C,
            *spatial)`` is upsampled per channel and normalised per example).
        size: The target spatial size, e.g. ``image.shape[-2:]``.

    Returns:
        Float maps of shape ``(N, C, *size)`` with values in [0, 1] (bilinear interpolation for
        2-D maps; linear and trilinear for 1-D and 3-D), in float32 for half-precision input.
    """
    require_spatial(maps)
    size = tuple(int(s) for s in size)
    if any(s <= 0 for s in size):
        raise ValueError(f"size must be positive sizes such as (224, 224), got {size}")
    spatial = maps.dim() - 2
    if len(size) != spatial:
        raise ValueError(
            f"size {size} has {len(size)} dims but the maps have {spatial} spatial dims"
        )
    _require_finite(maps)
    working = _unit_scale(working_precision(maps))  # on the small maps, before upsampling
    upsampled = F.interpolate(working, size=size, mode=_INTERPOLATION[spatial], align_corners=False)
    return _min_max(upsampled, maps.dtype)

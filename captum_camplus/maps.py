"""Turning layer maps into image-sized heatmaps, on the maps' device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_camplus.base import working_precision

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def require_spatial(maps: Tensor, what: str = "map") -> None:
    """Raise a clear error for a tensor without spatial dims (a layer such as ``nn.Linear``)."""
    if maps.dim() < 3:
        raise ValueError(
            f"the {what} has shape {tuple(maps.shape)}, without spatial dimensions: CAM maps need "
            "a layer whose output is (N, C, *spatial), such as a convolution (for a transformer, "
            "reshape its tokens to (N, C, H, W) first)"
        )


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map of a batch to [0, 1].

    A map whose values are all equal becomes all ones if they are positive and all zeros
    otherwise, so an all-zero map stays zero and no map is ever NaN.

    Raises:
        ValueError: if a map contains NaN or inf.
    """
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("the maps contain NaN or inf values; they cannot be normalised")
    flat = maps.flatten(start_dim=1)
    low = flat.amin(dim=1).view(-1, *[1] * (maps.dim() - 1))
    high = flat.amax(dim=1).view_as(low)
    spread = high - low
    scaled = (maps - low) / torch.where(spread > 0, spread, torch.ones_like(spread))
    flat_value = torch.where(high > 0, torch.ones_like(maps), torch.zeros_like(maps))
    return torch.where(spread > 0, scaled, flat_value)


def upsample_and_normalize(maps: Tensor, size: Sequence[int] | torch.Size) -> Tensor:
    """Upsample CAM maps to ``size`` and min-max normalise each to [0, 1], on their device.

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
    spatial = maps.dim() - 2
    if len(size) != spatial:
        raise ValueError(
            f"size {size} has {len(size)} dims but the maps have {spatial} spatial dims"
        )
    working = working_precision(maps)
    upsampled = F.interpolate(working, size=size, mode=_INTERPOLATION[spatial], align_corners=False)
    return normalize_maps(upsampled)

"""The precision CAM arithmetic runs in, and what happens when a value leaves a dtype's range.

A map is computed in float32 for float16/bfloat16 layers and in the layer's own dtype otherwise.
Finite activations and gradients can still give an infinite map (``sum_k w_k A^k`` over many
channels, ``S_k`` over many positions); the map is then computed again in float64. It is
returned in the layer's dtype, or, when its largest value does not fit there (float16 stops at
65504 and its normal numbers at 6.1e-5), in the first wider dtype that holds it, with a warning.
No finite layer tensor gives NaN or inf.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

#: Dtypes whose CAM arithmetic is carried out in float32 (and returned in the original dtype).
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a layer of ``dtype`` is weighted in: float32 for half precision."""
    return torch.float32 if dtype in LOW_PRECISION_DTYPES else dtype


def working_precision(tensor: Tensor) -> Tensor:
    """The tensor in the precision CAM arithmetic runs in: float32 for float16/bfloat16."""
    return tensor.to(working_dtype(tensor.dtype))


def finite_map(
    compute: Callable[[torch.dtype], Tensor],
    activation: Tensor,
    gradient: Tensor,
    working: torch.dtype | None = None,
) -> Tensor:
    """``compute(dtype)`` in the working precision, again in float64 if that overflowed.

    ``working`` overrides :func:`working_dtype` (a method whose options exceed float32 asks for
    float64).

    One host synchronisation (the map's peak). Returns the map in the layer's dtype or the
    narrowest wider float dtype that holds it.

    Raises:
        FloatingPointError: if the activations or gradients themselves hold NaN or inf (the
            model overflowed), or the map exceeds even float64.
    """
    layer_dtype = activation.dtype
    if not layer_dtype.is_floating_point:
        return compute(layer_dtype)
    working = working or working_dtype(layer_dtype)
    cam = compute(working)
    if cam.numel() == 0:
        return cam.to(layer_dtype)
    peak = float(cam.detach().abs().amax())  # NaN or inf if any entry is
    if not math.isfinite(peak) and working != torch.float64 and cam.device.type != "mps":
        cam = compute(torch.float64)
        peak = float(cam.detach().abs().amax())
    if not math.isfinite(peak):
        raise _non_finite_error(activation, gradient)
    out = holding_dtype(peak, layer_dtype)
    if out != layer_dtype:
        finfo = torch.finfo(layer_dtype)
        warnings.warn(
            f"the CAM's largest value lies outside the normal range of the layer's {layer_dtype} "
            f"([{finfo.tiny:.3g}, {finfo.max:.3g}]): it is returned in {out}",
            stacklevel=2,
        )
    return cam.to(out)


def holding_dtype(peak: float, dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if a map whose largest magnitude is ``peak`` fits its normal range, else the
    first of float32, float64 that holds it: beyond the largest value the map would be inf, and
    below the smallest normal one it would keep only a few bits, or none."""
    for candidate in (dtype, torch.float32, torch.float64):
        finfo = torch.finfo(candidate)
        if candidate.itemsize >= dtype.itemsize and (peak == 0 or finfo.tiny <= peak <= finfo.max):
            return candidate
    return torch.float64


def _non_finite_error(activation: Tensor, gradient: Tensor) -> FloatingPointError:
    for what, tensor, where in (
        ("activations", activation, "before the layer"),
        ("gradients", gradient, "after the layer (or in the score)"),
    ):
        if not bool(torch.isfinite(tensor).all()):
            return FloatingPointError(
                f"the layer's {what} contain NaN or inf although the inputs are finite: the model "
                f"overflowed {where} in {tensor.dtype} (float16 stops at 65504); run it in "
                "float32 or bfloat16, or scale the inputs"
            )
    return FloatingPointError("the CAM exceeds the float64 range; scale the inputs")


__all__ = [
    "LOW_PRECISION_DTYPES",
    "finite_map",
    "holding_dtype",
    "working_dtype",
    "working_precision",
]

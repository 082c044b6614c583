"""Accuracy: the largest deviation of each contender's layer-resolution map from a float64
evaluation of its method's formula (Lerma & Lucas, eq. 1-3 and 9; Taimeskhanov et al.,
definition 6) on the same inputs.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
from torch import Tensor

import captum_camplus.testing.reference as ref
from benchmarks.cases import Case


def reference_maps(activation: Tensor, gradient: Tensor) -> dict[str, Tensor]:
    """Each method's ReLU'd map from float64 ``A`` and ``g`` (``(N, C, H, W)``), by the project's
    one reference (:func:`captum_camplus.testing.reference.reference_maps`), written
    independently of the library."""
    return {
        name: torch.from_numpy(m) for name, m in ref.reference_maps(activation, gradient).items()
    }


def float64_case(case: Case) -> Case:
    """The same model, layer, inputs and targets in float64."""
    model = copy.deepcopy(case.model).double()
    layer_name = next(name for name, m in case.model.named_modules() if m is case.layer)
    layer = model.get_submodule(layer_name)
    return replace(case, model=model, layer=layer, inputs=case.inputs.double())


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max to [0, 1] (a constant map becomes 0), as the peers display maps."""
    flat = maps.flatten(1)
    low = flat.amin(dim=1).view(-1, *[1] * (maps.dim() - 1))
    spread = flat.amax(dim=1).view_as(low) - low
    return (maps - low) / torch.where(spread > 0, spread, 1.0)


def deviations(maps: dict[str, Tensor], references: dict[str, Tensor]) -> tuple[float, float]:
    """Largest deviation over the methods of ``maps``: raw and after per-map min-max.

    raw: ``max |M - R| / max R`` over the batch (R the float64 reference); min-max: the same
    difference after normalising each map to [0, 1], which is what a user of a peer sees.
    """
    raw, normalised = [], []
    for method, cam in maps.items():
        if method not in references:  # a registered method without a reference formula
            continue
        ref = references[method]
        cam = cam.detach().to(device="cpu", dtype=torch.float64).reshape(ref.shape)
        error, scale = float((cam - ref).abs().max()), float(ref.abs().max())
        raw.append(error / scale if scale > 0 else (0.0 if error == 0 else math.inf))
        normalised.append(float((minmax(cam) - minmax(ref)).abs().max()))
    return max(raw, default=math.nan), max(normalised, default=math.nan)


__all__ = ["deviations", "float64_case", "minmax", "reference_maps"]

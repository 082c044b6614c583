"""Explanation maps ``E = L (.) I`` and the class scores ``Y`` and ``O`` of one batched forward.

Everything runs on the model's device. Two ways to say what ``I`` is:

- by default ``I`` is the model input as given (what Quantus passes), so ``E = L (.) x``;
- with ``preprocess``, ``I`` is an image in [0, 1] and the model sees ``preprocess(I)`` and
  ``preprocess(E)``, as in the papers, where ``E = L (.) I`` is defined on the image.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from captum_camplus import check_target, require_spatial, upsample_and_normalize

from .functional import Reduction, dead_zone_mass
from .guards import check_not_probabilities

#: A user's preprocessing from an image in [0, 1] to the model input, e.g. a normalisation.
Preprocess = Callable[[Tensor], Tensor]


class Scores(NamedTuple):
    """The score of the explained class for each image, in float64."""

    value: Tensor  #: softmax probability or the raw output (``Y`` or ``O``)
    log: Tensor  #: its logarithm; from ``log_softmax`` for probabilities (no underflow)
    target: Tensor  #: the explained class of each image (long)


def model_forward(
    model: Callable[[Tensor], Tensor],
    preprocess: Preprocess | None = None,
    softmax: bool = False,
) -> Callable[[Tensor], Tensor]:
    """The function the metrics call: ``model(preprocess(x))``, optionally followed by a softmax.

    With ``preprocess``, every input must be an image in [0, 1] (checked on each call).
    """
    if preprocess is None and not softmax:
        return model

    def forward(inputs: Tensor) -> Tensor:
        if preprocess is not None:
            check_image(inputs)
            inputs = preprocess(inputs)
        outputs = model(inputs)
        if not softmax:
            return outputs
        check_not_probabilities(outputs)
        return torch.softmax(outputs, dim=1)

    return forward


def check_image(images: Tensor) -> None:
    """Raise unless ``images`` lie in [0, 1], the range ``E = L (.) I`` is defined on."""
    if not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError(
            "with preprocess, the inputs must be images in [0, 1] (preprocess turns them into "
            f"model inputs), but they range over [{images.min().item():.4g}, "
            f"{images.max().item():.4g}]; pass preprocess=None to use the inputs as given"
        )


def explanation_maps(maps: Tensor, inputs: Tensor) -> Tensor:
    """``E = L (.) I`` (Lerma & Lucas, eq. 15): each map min-max normalised to [0, 1], upsampled
    to the inputs' size and multiplied into every channel.

    An all-zero map gives an all-zero ``E``; a NaN map raises ``ValueError``.
    """
    require_spatial(maps)  # a layer such as nn.Linear: say so, not that the shapes differ
    if maps.dim() != inputs.dim() or maps.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit inputs of shape "
            f"{tuple(inputs.shape)}: pass one (N, 1, *spatial) map per image"
        )
    if maps.shape[1] not in (1, inputs.shape[1]):
        raise ValueError(
            f"maps have {maps.shape[1]} channels; use 1 or the inputs' {inputs.shape[1]}"
        )
    heatmaps = upsample_and_normalize(maps, inputs.shape[2:])
    return heatmaps.to(inputs.dtype) * inputs


def cam_dead_zone_mass(maps: Tensor, unseen: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Dead-zone mass (Taimeskhanov et al., eq. 7) of maps at any resolution, each upsampled to the
    mask's size and min-max normalised first, like ``L`` in the explanation maps."""
    spatial = unseen.shape[-(maps.dim() - 2) :] if maps.dim() > 2 else unseen.shape
    return dead_zone_mass(upsample_and_normalize(maps, spatial), unseen, reduction)


def class_scores(
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Tensor | int | Sequence[int] | np.ndarray | None = None,
    softmax: bool = True,
) -> Scores:
    """Score of the target class on each input, from one batched forward without gradients.

    Args:
        forward: The model (or :func:`model_forward` of it), returning ``(N, classes)``.
        inputs: The batch, on the model's device.
        target: One class for all images, or one per image; ``None`` explains the predicted
            class.
        softmax: Softmax probabilities (the papers' choice) computed as ``log_softmax`` in
            float64; otherwise the raw outputs, whose log is NaN where they are not positive.
            Outputs that already are probabilities are refused with ``softmax=True``
            (:func:`metrics.guards.check_not_probabilities`).
    """
    with torch.no_grad():
        outputs = forward(inputs)
    return target_scores(outputs, target, softmax)


def target_scores(
    outputs: Tensor,
    target: Tensor | int | Sequence[int] | np.ndarray | None = None,
    softmax: bool = True,
) -> Scores:
    """:func:`class_scores` from outputs already computed (e.g. by the CAM pass's forward)."""
    check_scores(outputs)
    outputs = outputs.detach()
    if target is None:
        target = outputs.argmax(dim=1)
    target = as_target(target, *outputs.shape, device=outputs.device)
    if softmax:
        check_not_probabilities(outputs)
    outputs = outputs.to(torch.float64)
    if softmax:
        log = torch.log_softmax(outputs, dim=1).gather(1, target[:, None])[:, 0]
        return Scores(log.exp(), log, target)
    value = outputs.gather(1, target[:, None])[:, 0]
    return Scores(value, value.log(), target)


def check_scores(outputs: object) -> None:
    """Raise unless the model's outputs are ``(N, classes)`` scores."""
    if not isinstance(outputs, Tensor) or outputs.dim() != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(f"the model must return (N, classes) scores, got {shape}")


def as_target(
    target: Tensor | int | Sequence[int] | np.ndarray,
    n: int,
    classes: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The explained class of each of ``n`` images as a long tensor on ``device``.

    The core's :func:`~captum_camplus.checks.check_target` decides what a valid target is (integer
    classes, one for the batch or one per image, none negative); ``classes`` bounds them above.
    """
    checked = check_target(target, n)
    if checked is None:
        raise ValueError("no target given: pass the class to explain, one or one per image")
    if isinstance(checked, tuple) or (
        isinstance(checked, list) and checked and isinstance(checked[0], tuple)
    ):
        raise ValueError(f"the metrics take one class index per image, not tuples: {target!r}")
    target = torch.as_tensor(checked, dtype=torch.long, device=device).flatten()
    if target.numel() == 1:
        target = target.expand(n)
    if classes is not None and bool((target >= classes).any()):
        raise ValueError(f"targets must lie in [0, {classes}), got {target.tolist()}")
    return target


def keep_mask(y: Tensor, threshold: float | None) -> Tensor:
    """Images whose score ``Y`` exceeds ``threshold`` (Lerma & Lucas keep > 0.5); all if None."""
    if threshold is None:
        return torch.ones_like(y, dtype=torch.bool)
    return y > threshold


__all__ = [
    "Preprocess",
    "Scores",
    "as_target",
    "cam_dead_zone_mass",
    "check_image",
    "check_scores",
    "class_scores",
    "explanation_maps",
    "keep_mask",
    "model_forward",
    "target_scores",
]

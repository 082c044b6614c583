"""Perturbation metrics: deletion and insertion AUC, and ROAD, batched over maps and images.

Every function takes ``forward`` (the model, or :func:`metrics.confidence.model_forward` of it),
the ``inputs`` it takes, ``(N, C, H, W)``, and the maps to score at the inputs' size: ``(N, H,
W)``, ``(N, 1, H, W)``, or a stack ``(K, N, 1, H, W)`` of ``K`` methods or kinds of map. Every
perturbation step is one forward of all ``K * N`` perturbed images together. Scores are the
target's under ``scores`` (the kind a wrapper states, else softmax;
:func:`metrics.confidence.class_scores`).

Pixel order: by decreasing map value, ties by increasing flat index ``h * W + w`` (a stable
sort), so equal maps always give the same curve. ROAD's least-relevant-first order is the
reverse of that order.

References:
- Petsiuk, Das & Saenko (2018), "RISE: Randomized Input Sampling for Explanation of Black-box
  Models", BMVC 2018, arXiv:1806.07421: deletion and insertion.
- Rong, Leemann, Borisov, Kasneci & Kasneci (2022), "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022, arXiv:2202.00449: ROAD, noisy linear
  imputation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from .confidence import ScoreKind, as_target, class_scores, model_score_kind
from .functional import Reduction, _reduce
from .imputation import ROAD_NOISE, Solver, noisy_linear_imputation

Forward = Callable[[Tensor], Tensor]
Order = Literal["most", "least"]

#: Standard deviation, in pixels, of the Gaussian blur of insertion's default substrate (RISE's
#: code blurs with sigma 5 and an 11-pixel kernel; here the kernel spans +-3 sigma).
BLUR_SIGMA = 5.0
#: ROAD's percentages of pixels removed (10 % to 90 %, as pytorch-grad-cam's averaged ROAD).
ROAD_PERCENTILES: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def deletion_auc(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    steps: int,
    substrate: Tensor | None = None,
    scores: ScoreKind | None = None,
    reduction: Reduction = "none",
) -> Tensor:
    """Deletion AUC (Petsiuk et al.): the area under the target's score as the most relevant
    pixels are replaced by ``substrate`` (default zeros), lower is better.

    At step ``s = 0..steps`` the first ``k_s = round(s * H * W / steps)`` pixels of the order
    are replaced in every channel; ``AUC = sum_s (k_s - k_{s-1}) / (H W) * (p_s + p_{s-1}) / 2``
    (trapezoid rule over the fraction of pixels), in [0, 1] for probabilities.

    Returns:
        float64 AUCs, ``(N,)`` or ``(K, N)`` (``reduction="mean"``: averaged over images).
    """
    curve, fraction = perturbation_curve(
        forward, inputs, maps, target, steps=steps, substrate=substrate, insert=False, scores=scores
    )
    return _reduce(trapezoid(curve, fraction), reduction, dim=-1)


def insertion_auc(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    steps: int,
    substrate: Tensor | None = None,
    scores: ScoreKind | None = None,
    reduction: Reduction = "none",
) -> Tensor:
    """Insertion AUC (Petsiuk et al.): the area under the target's score as the most relevant
    pixels are copied from the image into ``substrate`` (default :func:`gaussian_blur` of the
    inputs, sigma :data:`BLUR_SIGMA`), higher is better. Steps and area as
    :func:`deletion_auc`."""
    curve, fraction = perturbation_curve(
        forward, inputs, maps, target, steps=steps, substrate=substrate, insert=True, scores=scores
    )
    return _reduce(trapezoid(curve, fraction), reduction, dim=-1)


def perturbation_curve(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    steps: int,
    substrate: Tensor | None = None,
    insert: bool = False,
    scores: ScoreKind | None = None,
) -> tuple[Tensor, Tensor]:
    """The deletion (``insert=False``) or insertion curve: the target's score at each step.

    Returns:
        ``(curve, fraction)``: float64 scores ``(K, N, steps + 1)`` (``(N, steps + 1)`` for
        maps without ``K``) and the fraction of pixels ``k_s / (H W)`` of each step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer (e.g. 100), got {steps!r}")
    kind = model_score_kind(forward, scores)
    flat, stacked = _flat_maps(maps, inputs)
    if substrate is None:
        substrate = gaussian_blur(inputs) if insert else torch.zeros_like(inputs)
    substrate = _check_substrate(substrate, inputs)
    rank = relevance_rank(flat)
    pixels = flat.shape[-1]
    counts = [round(s * pixels / steps) for s in range(steps + 1)]
    target = _targets(target, flat.shape[:2], inputs.device)
    curve = torch.stack(
        [
            _perturbed_scores(forward, inputs, substrate, rank < k, insert, target, kind)
            for k in counts
        ],
        dim=-1,
    )
    fraction = torch.tensor(counts, dtype=torch.float64, device=curve.device) / pixels
    return (curve if stacked else curve[0]), fraction


def trapezoid(curve: Tensor, fraction: Tensor) -> Tensor:
    """Trapezoid rule of ``curve`` over ``fraction`` along the last dimension."""
    return torch.trapezoid(curve, fraction, dim=-1)


def relevance_rank(flat: Tensor) -> Tensor:
    """Each pixel's position in the order of decreasing map value, ties by flat index:
    ``rank < k`` marks the ``k`` most relevant pixels."""
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[-1], device=flat.device).expand_as(order)
    return rank.scatter_(-1, order, positions)


def gaussian_blur(inputs: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """Each channel blurred by a separable Gaussian of ``sigma`` pixels, kernel +-3 sigma, the
    border replicated; in the inputs' dtype and device."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(device=inputs.device, dtype=inputs.dtype)
    n, c, h, w = inputs.shape
    x = inputs.reshape(n * c, 1, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


def road_curve(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    order: Order = "most",
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    scores: ScoreKind | None = None,
    clip: tuple[float, float] | None = None,
    solver: Solver = "auto",
) -> Tensor:
    """ROAD (Rong et al.): the target's score after removing the ``p`` % most (``order="most"``,
    MoRF) or least (``"least"``, LeRF) relevant pixels and imputing them with
    :func:`noisy_linear_imputation`, for each ``p`` of ``percentiles``.

    ``round(p * H * W / 100)`` pixels are removed, in the pixel order of the module (reversed for
    ``"least"``). The noise is drawn from a generator on the inputs' device (where the maps are
    moved) seeded with ``seed``,
    one draw per percentile in order, so a call is reproducible on one device. ``clip`` bounds
    the imputed images (``(0, 1)`` for images in [0, 1] that a preprocessing normalises);
    ``solver`` is the imputation's (:mod:`metrics.imputation`).

    Returns:
        float64 scores ``(K, N, len(percentiles))`` (``(N, ...)`` for maps without ``K``).
    """
    if order not in ("most", "least"):
        raise ValueError(f"order must be 'most' (MoRF) or 'least' (LeRF), got {order!r}")
    if not percentiles or any(not 0 <= p < 100 for p in percentiles):
        raise ValueError(
            f"percentiles must be a non-empty list of percentages in [0, 100), got {percentiles}"
        )
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    kind = model_score_kind(forward, scores)
    flat, stacked = _flat_maps(maps, inputs)
    rank = relevance_rank(flat)
    if order == "least":  # the reverse of the most-relevant-first order
        rank = flat.shape[-1] - 1 - rank
    target = _targets(target, flat.shape[:2], inputs.device)
    generator = torch.Generator(device=flat.device).manual_seed(seed)
    pixels = flat.shape[-1]
    curve = []
    for p in percentiles:
        removed = rank < round(p * pixels / 100)
        images = inputs.expand(removed.shape[0], *inputs.shape).flatten(0, 1)
        holes = removed.flatten(0, 1).view(-1, *inputs.shape[2:])
        batch = noisy_linear_imputation(images, holes, noise, generator, solver=solver).to(
            inputs.dtype
        )
        if clip is not None:
            batch = batch.clamp(*clip)
        curve.append(class_scores(forward, batch, target.flatten(), kind).value.view(target.shape))
    result = torch.stack(curve, dim=-1)
    return result if stacked else result[0]


def _flat_maps(maps: Tensor, inputs: Tensor) -> tuple[Tensor, bool]:
    """Maps as ``(K, N, H * W)`` float64, and whether they came with ``K``.

    Raises:
        ValueError: for inputs that are not finite ``(N, C, H, W)`` images, maps not at the
            inputs' size or of another number of images, or NaN maps.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor of images (N, C, H, W), got {shape}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("the inputs contain NaN or inf values: the model's scores are undefined")
    n, _, h, w = inputs.shape
    stacked = maps.dim() == 5
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() == 4:
        maps = maps[None]
    if maps.dim() != 5 or maps.shape[1:] != (n, 1, h, w):
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit inputs of shape "
            f"{tuple(inputs.shape)}: pass (N, H, W), (N, 1, H, W) or (K, N, 1, H, W) maps at the "
            "inputs' size, e.g. with captum_camplus.upsample_and_normalize(maps, inputs.shape[2:])"
        )
    flat = maps.to(device=inputs.device, dtype=torch.float64).flatten(2)
    if bool(torch.isnan(flat).any()):
        raise ValueError("the maps contain NaN values: their pixel order is undefined")
    return flat, stacked


def _check_substrate(substrate: Tensor, inputs: Tensor) -> Tensor:
    if not isinstance(substrate, Tensor) or substrate.shape not in (inputs.shape, inputs.shape[1:]):
        shape = tuple(substrate.shape) if isinstance(substrate, Tensor) else substrate
        raise ValueError(
            f"the substrate must have the inputs' shape {tuple(inputs.shape)} (one per image) or "
            f"{tuple(inputs.shape[1:])} (one for all), got {shape}"
        )
    return substrate.to(device=inputs.device, dtype=inputs.dtype).expand_as(inputs)


def _targets(
    target: Tensor | int | Sequence[int], shape: torch.Size, device: torch.device
) -> Tensor:
    """The class of each image, ``(K, N)``."""
    return as_target(target, shape[1], device=device).expand(shape)


def _perturbed_scores(
    forward: Forward,
    inputs: Tensor,
    substrate: Tensor,
    chosen: Tensor,
    insert: bool,
    target: Tensor,
    kind: ScoreKind,
) -> Tensor:
    """One forward of the ``K * N`` images with the ``chosen`` pixels ``(K, N, H * W)`` deleted
    (replaced by the substrate) or inserted (into the substrate)."""
    mask = chosen.view(*chosen.shape[:2], 1, *inputs.shape[2:])
    images = (
        torch.where(mask, inputs, substrate) if insert else torch.where(mask, substrate, inputs)
    )
    values = class_scores(forward, images.flatten(0, 1), target.flatten(), kind).value
    return values.view(target.shape)


__all__ = [
    "BLUR_SIGMA",
    "ROAD_PERCENTILES",
    "deletion_auc",
    "gaussian_blur",
    "insertion_auc",
    "perturbation_curve",
    "relevance_rank",
    "road_curve",
    "trapezoid",
]

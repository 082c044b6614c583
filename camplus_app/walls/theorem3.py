"""Theorem 3 of Taimeskhanov et al. by simulation: Grad-CAM lights up what the model cannot see.

Setting (Taimeskhanov et al., section 2.3): :class:`Theorem3CNN`, one convolution with ``V``
filters, ReLU, max pooling and one linear unit, every weight i.i.d. ``N(0, tau^2)`` and the weights
reading the lower half of the pooled map set to zero. Over many random initializations, the mean
Grad-CAM map on the part of ``B`` (the ReLU output) that the head cannot see is positive, and
matches Taimeskhanov et al., eq. 11; the HiResCAM map there is exactly zero for every
initialization.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from camplus_app.walls.cams import WALL_METHODS, wall_maps
from camplus_app.walls.models import Theorem3CNN


@dataclass(frozen=True)
class Theorem3Result:
    """Maps averaged over random initializations, with Taimeskhanov et al.'s predictions.

    Attributes:
        seeds: Number of initializations (seeds ``0 .. seeds - 1``).
        filters: ``V``.
        unseen: Boolean ``(h, w)``: positions of ``B`` the head cannot see.
        mean_maps: Method name -> ``(N, h, w)`` float64 mean map over the initializations.
        max_unseen: Method name -> largest map value on ``unseen`` over every initialization
            and image (0.0 means the map is exactly zero there every time).
        predicted: ``(N, h, w)`` expected Grad-CAM map by Taimeskhanov et al., eq. 11, with
            ``E[sqrt(Y)]`` estimated over the same filters.
        bound: ``(N, h, w)`` lower bound of Taimeskhanov et al., eq. 5, or None when ``V <= 20``.
    """

    seeds: int
    filters: int
    unseen: Tensor
    mean_maps: dict[str, Tensor]
    max_unseen: dict[str, float]
    predicted: Tensor
    bound: Tensor | None

    def unseen_mean(self, map_: Tensor) -> float:
        """Mean of a ``(N, h, w)`` map over the images and the unseen positions."""
        return float(map_[:, self.unseen].mean())

    def summary(self) -> str:
        """A short text report: mean and maximum of each map on the unseen part."""
        lines = [
            f"Taimeskhanov et al., theorem 3 at initialization: {self.seeds} seeds, "
            f"V = {self.filters} filters, "
            f"unseen part of B: {int(self.unseen.sum())} of {self.unseen.numel()} positions",
            f"{'map on the unseen part':<26} {'mean':>10} {'max':>10}",
        ]
        for name in self.mean_maps:
            lines.append(
                f"{name:<26} {self.unseen_mean(self.mean_maps[name]):>10.4g} "
                f"{self.max_unseen[name]:>10.4g}"
            )
        lines.append(f"{'Grad-CAM by eq. 11':<26} {self.unseen_mean(self.predicted):>10.4g}")
        if self.bound is not None:
            lines.append(f"{'eq. 5 lower bound':<26} {self.unseen_mean(self.bound):>10.4g}")
        return "\n".join(lines)


def theorem3_experiment(
    images: Tensor,
    seeds: int = 200,
    filters: int = 64,
    kernel_size: int = 3,
    pool: int = 2,
    tau: float = 1.0,
) -> Theorem3Result:
    """Average the maps of :data:`WALL_METHODS` over ``seeds`` random masked models.

    Args:
        images: ``(N, 1, H, W)`` grayscale images in [0, 1] (Taimeskhanov et al., section 2.1); ``H
        - k + 1`` must
            be a multiple of ``2 * pool``.
        seeds: Number of random initializations. filters, kernel_size, pool, tau: ``V``, ``k``,
        ``k'`` and ``tau`` of Taimeskhanov et al., theorem 3.
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W) grayscale, got {tuple(images.shape)}")
    if seeds < 1:
        raise ValueError(f"seeds must be positive, got {seeds}")
    size = tuple(images.shape[-2:])
    unseen = Theorem3CNN(size, filters, kernel_size, pool).cam_unseen().to(images.device)
    h, w = unseen.shape
    zeros = torch.zeros(images.shape[0], h, w, dtype=torch.float64, device=images.device)
    totals = {name: zeros.clone() for name in WALL_METHODS}
    max_unseen = dict.fromkeys(WALL_METHODS, 0.0)
    # sum over seeds of sqrt(Y), Y = sum_q (B^(q)_ij)^2 (Taimeskhanov et al., appendix D)
    sqrt_y = zeros.clone()
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        model = Theorem3CNN(size, filters, kernel_size, pool, tau, generator).to(images.device)
        for name, cam in wall_maps(model, model.cam_layer, images, target=0).items():
            cam = cam[:, 0].double()
            totals[name] += cam
            max_unseen[name] = max(max_unseen[name], float(cam[:, unseen].max()))
        with torch.no_grad():
            b = model.features[: model.cam_index + 1](images).double()
        sqrt_y += b.square().sum(dim=1).sqrt()
    pooled = (h // pool) * (w // pool)
    # Taimeskhanov et al., eq. 11: E[GC_ij] = tau sqrt(h'w') E[sqrt(Y)] / (2 h w sqrt(pi))
    predicted = tau * math.sqrt(pooled) * (sqrt_y / seeds) / (2 * h * w * math.sqrt(math.pi))
    bound = None
    if filters > 20:
        # Taimeskhanov et al., eq. 5, ||m||_2 the norm of the k x k input patch under position (i,
        # j)
        ones = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
        patch_norm = F.conv2d(images.double().square(), ones.to(images.device)).sqrt()[:, 0]
        scale = (filters - 20) / math.sqrt(filters) * math.sqrt(pooled / (16 * math.pi))
        bound = scale * tau**2 / (h * w) * patch_norm
    return Theorem3Result(
        seeds=seeds,
        filters=filters,
        unseen=unseen,
        mean_maps={name: total / seeds for name, total in totals.items()},
        max_unseen=max_unseen,
        predicted=predicted,
        bound=bound,
    )

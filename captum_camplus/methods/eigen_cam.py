"""EigenCAM (Muhammad & Yeasin 2020): the activations projected on their first principal component.

References:
- Muhammad & Yeasin (2020), "Eigen-CAM: class activation map using principal components",
  IJCNN, arXiv:2008.00299.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import CamAttribution
from captum_camplus.layouts import LayoutSpec
from captum_camplus.registry import register_method


def principal_direction(x: Tensor, centred: bool = False) -> Tensor:
    r"""``v_1``, shape ``(N, C, 1, ...)``: the first right singular vector of ``X = U S V^T``,
    ``X`` the ``(positions, C)`` matrix of each example of ``x`` (less its mean per channel if
    ``centred``).

    Sign rule (the SVD leaves it free): :math:`\sum_{ij} (X v_1)_{ij} \ge 0` for the uncentred
    ``X``, so the map of non-negative activations is non-negative. A tensor without a grid is
    refused.
    """
    if x.dim() < 3:
        raise ValueError(
            f"EigenCAM and EigenGrad-CAM need a layer with a spatial grid, (N, C, *grid); this "
            f"one gives {tuple(x.shape)}: choose a convolutional layer, or pass layout= for tokens"
        )
    flat = x.flatten(2)  # (N, C, P)
    rows = flat - flat.mean(dim=2, keepdim=True) if centred else flat
    v = torch.linalg.svd(rows.transpose(1, 2), full_matrices=False).Vh[:, 0]  # (N, C)
    flip = (v * flat.sum(dim=2)).sum(dim=1, keepdim=True) < 0
    return torch.where(flip, -v, v).reshape(*v.shape, *(1,) * (x.dim() - 2))


def principal_terms(x: Tensor, centred: bool) -> Tensor:
    """The terms ``v_1k (X^k - centre)`` whose channel sum is ``X``'s projection on ``v_1``."""
    direction = principal_direction(x, centred)
    return direction * (x - x.mean(dim=tuple(range(2, x.dim())), keepdim=True) if centred else x)


class _Eigen(CamAttribution):
    """The two EigenCAMs: ``centred`` (default False, the paper) is pytorch-grad-cam's variant."""

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        *,
        centred: bool = False,
        layout: LayoutSpec = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, layout=layout)
        self.centred = centred


@register_method("EigenCAM", default=False)
class LayerEigenCam(_Eigen):
    r"""EigenCAM: channel weights :math:`v_1` of the activations (Muhammad & Yeasin).

    .. math:: L = \sum_k v_{1,k} A^k, \quad A = U \Sigma V^T

    No gradient is used. ``centred=True``: :math:`\sum_k v_{1,k} (A^k - \bar A^k)` with ``v_1``
    of the centred ``A``, as pytorch-grad-cam computes it.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return principal_direction(activation, self.centred)

    def terms(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return principal_terms(activation, self.centred)

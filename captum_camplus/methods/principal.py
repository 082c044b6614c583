"""The first principal component of a layer tensor, which EigenCAM and EigenGrad-CAM project on.

References:
- Muhammad & Yeasin (2020), "Eigen-CAM: class activation map using principal components",
  IJCNN, arXiv:2008.00299.
"""

from __future__ import annotations

import torch
from torch import Tensor


def principal_direction(x: Tensor, centred: bool = False) -> Tensor:
    r"""``v_1``, shape ``(N, C, 1, ...)``: the first right singular vector of ``X = U S V^T``,
    ``X`` the ``(positions, C)`` matrix of each example of ``x`` (less its mean per channel if
    ``centred``).

    Sign rule (the decomposition leaves it free): :math:`\sum_{ij} (X v_1)_{ij} \ge 0` for the
    uncentred ``X``, so the map of non-negative activations is non-negative. A tensor without a
    grid is refused.
    """
    if x.dim() < 3:
        raise ValueError(
            f"EigenCAM and EigenGrad-CAM need a layer with a spatial grid, (N, C, *grid); this "
            f"one gives {tuple(x.shape)}: choose a convolutional layer, or pass layout= for tokens"
        )
    flat = x.flatten(2)  # (N, C, P): X^T
    rows = flat - flat.mean(dim=2, keepdim=True) if centred else flat
    v = _top_right_singular_vector(rows)
    flip = (v * flat.sum(dim=2)).sum(dim=1, keepdim=True) < 0
    return torch.where(flip, -v, v).reshape(*v.shape, *(1,) * (x.dim() - 2))


def _top_right_singular_vector(xt: Tensor) -> Tensor:
    """``v_1`` of each ``X`` given as ``X^T`` ``(N, C, P)``, from the eigenvectors of the smaller
    Gram matrix: ``X^T X`` (C x C) has ``v_1`` as its top one, ``X X^T`` (P x P) has ``u_1`` and
    ``v_1 = X^T u_1 / |X^T u_1|``. A few times faster than the SVD of ``X`` for a layer's grid
    (49 positions against 512 channels) and as accurate; each ``X`` is first divided by its
    largest magnitude, so that the squares neither overflow nor underflow. Zero where ``X`` is
    zero (no direction)."""
    scale = xt.abs().amax(dim=(1, 2), keepdim=True)
    xt = xt / torch.where(scale > 0, scale, 1)
    channels, positions = xt.shape[1:]
    if channels <= positions:
        v = torch.linalg.eigh(xt @ xt.transpose(1, 2)).eigenvectors[..., -1]
    else:
        u = torch.linalg.eigh(xt.transpose(1, 2) @ xt).eigenvectors[..., -1:]
        v = (xt @ u).squeeze(-1)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return torch.where(scale.flatten(1) > 0, v, 0)


def principal_terms(x: Tensor, centred: bool) -> Tensor:
    """The terms ``v_1k (X^k - centre)`` whose channel sum is ``X``'s projection on ``v_1``."""
    direction = principal_direction(x, centred)
    return direction * (x - x.mean(dim=tuple(range(2, x.dim())), keepdim=True) if centred else x)


__all__ = ["principal_direction", "principal_terms"]

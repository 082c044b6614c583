"""Tiny models and data shared by the metrics tests (no downloads, milliseconds each).

Papers (full references in the README): Taimeskhanov, Sicre & Garreau (2024), arXiv:2404.01964.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-relu-conv-relu (the CAM layer, 8 x H/2 x W/2), then a linear head on the flattened map.

    The head sees every position with its own weights (as VGG's first dense layer does), so the
    gradients vary over the map. ``dead_rows`` zeroes the head's weights for the bottom rows of the
    layer map, which the model then cannot see (Taimeskhanov et al., section 3.1).
    """

    def __init__(self, classes: int = 5, size: int = 16, dead_rows: int = 0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        side = size // 2
        self.head = nn.Linear(8 * side * side, classes)
        if dead_rows:
            with torch.no_grad():
                self.head.weight.view(classes, 8, side, side)[:, :, side - dead_rows :] = 0

    @property
    def layer(self) -> nn.Module:
        return self.features[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(start_dim=1))


def tiny_setup(
    n: int = 6, size: int = 16, seed: int = 0, dead_rows: int = 0
) -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    """An eval-mode TinyNet, ``n`` images in [0, 1] and their predicted classes."""
    model = TinyNet(size=size, dead_rows=dead_rows, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.rand(n, 3, size, size, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    return model, images, labels


def imputation_by_hand(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """x_i = sum_j w_ij x_j / sum_j w_ij over in-image neighbours, a dense float64 solve."""
    channels, h, w = image.shape
    unknown = [i for i in range(h * w) if removed.reshape(-1)[i]]
    column = {pixel: k for k, pixel in enumerate(unknown)}
    weights = {(0, 1): 1 / 6, (1, 0): 1 / 6, (0, -1): 1 / 6, (-1, 0): 1 / 6}
    weights.update({(1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12})
    out = image.copy()
    for c in range(channels):
        a = np.zeros((len(unknown), len(unknown)))
        b = np.zeros(len(unknown))
        for k, pixel in enumerate(unknown):
            row, col = divmod(pixel, w)
            for (dr, dc), weight in weights.items():
                r, q = row + dr, col + dc
                if not (0 <= r < h and 0 <= q < w):
                    continue
                a[k, k] += weight
                if removed[r, q]:
                    a[k, column[r * w + q]] -= weight
                else:
                    b[k] += weight * image[c, r, q]
        out[c].reshape(-1)[unknown] = np.linalg.solve(a, b)
    return out

"""Tiny models and data shared by the metrics tests (no downloads, milliseconds each).

Papers (full references in the README): Taimeskhanov, Sicre & Garreau (2024), arXiv:2404.01964.
"""

from __future__ import annotations

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

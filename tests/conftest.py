from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, whatever ran before it (or in another
    xdist worker): a model built without a seed of its own is the same model every run."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=10).eval()


@pytest.fixture(scope="session")
def vgg11() -> nn.Module:
    from torchvision.models import vgg11

    torch.manual_seed(0)
    return vgg11(num_classes=10).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


class Net(nn.Module):
    """conv -> BatchNorm -> ReLU -> global mean -> linear; ``side`` is called, never used."""

    def __init__(self, classes: int = 5, outputs: str = "logits") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.side = nn.Conv2d(3, 6, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        logits = self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))
        if self.outputs == "probabilities":
            return logits.softmax(dim=1)
        if self.outputs == "log-probabilities":
            return logits.log_softmax(dim=1)
        return logits


@pytest.fixture
def net() -> Net:
    """An eval-mode ``Net`` whose BatchNorm statistics differ from any batch's own."""
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def x() -> torch.Tensor:
    """Four 3 x 8 x 8 images in [0, 1]."""
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))

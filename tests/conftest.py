from __future__ import annotations

import pytest
import torch
from torch import nn


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

from __future__ import annotations

import pytest
import torch
from torch import nn


def capture_layer(model: nn.Module, layer: nn.Module, x: torch.Tensor, target) -> tuple:
    """Activations A of ``layer`` and gradients dS/dA of the summed target scores, by hand.

    Independent of Captum and of the library: a forward hook and one ``autograd.grad``.
    """
    store = {}

    def keep_output(_module, _inputs, out):
        store["A"] = out
        return out.clone()  # later in-place ops (ReLU(inplace), +=) must not change A

    handle = layer.register_forward_hook(keep_output)
    try:
        out = model(x)
    finally:
        handle.remove()
    targets = torch.as_tensor(target).expand(x.shape[0]) if not isinstance(target, list) else target
    score = out[torch.arange(x.shape[0]), torch.as_tensor(targets)].sum()
    (grad,) = torch.autograd.grad(score, store["A"])
    return store["A"].detach(), grad.detach()


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

"""An attribution keeps no layer-sized tensor and no graph once ``attribute`` returns: a batch's
gradients must not stay alive in a long-lived instance (a metric's scorer), nor the graph of a
``create_graph=True`` call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_camplus import LayerCams, LayerGradCamPlusPlus


def _tensors(root: Any) -> Iterator[Tensor]:
    """Every tensor reachable from ``root`` through containers and instance attributes."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 6 * 6, 3)
    ).double()


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("kind", ["Grad-CAM++", "LayerCams"])
def test_attribute_leaves_no_layer_sized_tensor_and_no_graph(kind: str, create_graph: bool):
    model = _model()
    inputs = torch.rand(4, 1, 6, 6, dtype=torch.float64, requires_grad=create_graph)
    layer_shape = (4, 5, 6, 6)
    if kind == "LayerCams":
        attribution: Any = LayerCams(model, model[1])
    else:
        attribution = LayerGradCamPlusPlus(model, model[1])
    grad_kwargs = {"create_graph": True} if create_graph else None
    maps = attribution.attribute(inputs, target=1, grad_kwargs=grad_kwargs)
    assert maps is not None
    held = list(_tensors(attribution))
    assert not [t.shape for t in held if tuple(t.shape) == layer_shape]
    assert not [t.shape for t in held if t.grad_fn is not None]
    if kind == "Grad-CAM++":  # what it does keep: six numbers
        assert set(attribution.last_diagnostics.summary()) == {
            "positive",
            "unstable",
            "raw_min",
            "raw_max",
            "min",
            "max",
        }

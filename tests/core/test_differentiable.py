"""Maps with ``create_graph=True`` are differentiable functions of the input, for every method and
every Grad-CAM++ alpha option: their gradients match finite differences (float64 gradcheck)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from captum_camplus import METHODS, LayerGradCamPlusPlus
from captum_camplus.registry import FAMILIES


def _tiny_model() -> nn.Sequential:
    """Signed activations (tanh), so the Grad-CAM++ stabilizers act on some entries."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 3, 1), nn.Flatten(), nn.Linear(27, 4)
    ).double()


def _check_gradients(method) -> None:
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(
        2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )

    def weighted_map(inputs: torch.Tensor) -> torch.Tensor:
        cam = method.attribute(inputs, target=[1, 2], grad_kwargs={"create_graph": True})
        return (cam * weights).sum()

    assert torch.autograd.gradcheck(
        weighted_map, (x.requires_grad_(),), eps=1e-6, atol=1e-5, rtol=1e-4
    )


#: Every alpha form with every stabilizer, and the per-channel normalisation (the stabilizer has no
#: effect on the constant form).
ALPHA_OPTIONS = [
    *itertools.product(["simplified", "paper"], ["clamp", "zero", "none"], [False]),
    ("simplified", "clamp", True),
    ("simplified", "zero", True),
    ("paper", "none", True),
    ("constant", "clamp", False),
    ("constant", "clamp", True),
]


@pytest.mark.parametrize(("alpha", "stabilizer", "normalize"), ALPHA_OPTIONS)
def test_grad_cam_plus_plus_maps_are_differentiable_for_every_alpha_option(
    alpha, stabilizer, normalize
):
    model = _tiny_model()
    method = LayerGradCamPlusPlus(
        model, model[1], alpha=alpha, stabilizer=stabilizer, normalize_alpha=normalize
    )
    _check_gradients(method)
    if alpha != "constant":  # the stabilizer was exercised, not only the plain formula
        assert method.last_diagnostics.summary()["unstable"] > 0


@pytest.mark.parametrize("name", list(FAMILIES["gradient"]))
def test_every_gradient_method_is_differentiable(name):
    model = _tiny_model()
    _check_gradients(METHODS[name](model, model[1]))


@pytest.mark.parametrize("name", list(FAMILIES["perturbation"]))
def test_every_perturbation_method_refuses_create_graph_with_the_reason(name):
    model = _tiny_model()
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="takes no gradients: .*grad_kwargs are not supported"):
        METHODS[name](model, model[1]).attribute(x, target=1, grad_kwargs={"create_graph": True})


def test_the_families_cover_every_registered_method_once():
    gradient, perturbation = set(FAMILIES["gradient"]), set(FAMILIES["perturbation"])
    assert gradient.isdisjoint(perturbation)
    assert gradient | perturbation == set(METHODS)
    assert {"Score-CAM", "Ablation-CAM"} <= perturbation


def test_the_normal_path_builds_no_graph():
    model = _tiny_model()
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    cam = LayerGradCamPlusPlus(model, model[1]).attribute(x, target=1)
    assert not cam.requires_grad

"""Bad input gets an error that names the problem; no map is ever NaN or inf."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_camplus import (
    LayerCams,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    upsample_and_normalize,
)

OURS = [LayerGradCam, LayerGradCamPlus, LayerGradCamPlusPlus, LayerHiResCam, LayerCams]


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.unused = nn.Conv2d(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


@pytest.fixture
def net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 3, 6, 6)


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("targets", [[0, 1], [0, 1, 2, 3, 4], torch.tensor([1, 2, 3])])
def test_target_count_different_from_batch(cls, net, x, targets):
    with pytest.raises(ValueError, match=r"got \d targets for a batch of 4 examples"):
        cls(net, net.conv).attribute(x, target=targets)


@pytest.mark.parametrize("cls", OURS)
def test_layer_not_called_by_forward(cls, net, x):
    with pytest.raises(ValueError, match="Conv2d was not called by the forward pass"):
        cls(net, net.unused).attribute(x, target=0)


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(cls, net, x, bad):
    x[2, 1, 3, 3] = bad
    with pytest.raises(ValueError, match=r"inputs \[0\] contain NaN or inf"):
        cls(net, net.conv).attribute(x, target=0)


@pytest.mark.parametrize("cls", OURS)
def test_inference_mode(cls, net, x):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cls(net, net.conv).attribute(x, target=0)
    with torch.inference_mode():
        frozen = x.clone()
    with pytest.raises(RuntimeError, match="created under torch.inference_mode"):
        cls(net, net.conv).attribute(frozen, target=0)


@pytest.mark.parametrize("cls", OURS)
def test_no_grad_context_is_fine(cls, net, x):
    with torch.no_grad():
        out = cls(net, net.conv).attribute(x, target=0)
    maps = out.values() if isinstance(out, dict) else [out]
    assert all(torch.isfinite(m).all() for m in maps)


def test_unknown_options_are_rejected(net):
    with pytest.raises(ValueError, match="alpha must be one of"):
        LayerGradCamPlusPlus(net, net.conv, alpha="exact")
    with pytest.raises(ValueError, match="stabilizer must be one of"):
        LayerGradCamPlusPlus(net, net.conv, stabilizer="eps")
    with pytest.raises(ValueError, match="exponent_scale"):
        LayerGradCamPlusPlus(net, net.conv, exponent_scale=0)
    with pytest.raises(ValueError, match="min_denominator"):
        LayerGradCamPlusPlus(net, net.conv, min_denominator=-1)
    with pytest.raises(ValueError, match="unknown CAM method 'scorecam'"):
        LayerCams(net, net.conv, ["Grad-CAM", "scorecam"])


def test_stabilizer_none_raises_on_an_exact_pole():
    """S_k = -2, g = 1: 2 + S_k g = 0 exactly."""
    A = torch.tensor([[[[-1.0, -1.0]]]])
    g = torch.tensor([[[[1.0, 0.5]]]])
    method = LayerGradCamPlusPlus(nn.Identity(), nn.Identity(), stabilizer="none")
    with pytest.raises(FloatingPointError, match="denominator .* is exactly 0"):
        method.map_from_layer(A, g)
    for stabilizer in ("clamp", "zero"):
        cam = LayerGradCamPlusPlus(nn.Identity(), nn.Identity(), stabilizer=stabilizer)
        assert torch.isfinite(cam.map_from_layer(A, g)).all()


@pytest.mark.parametrize("cls", OURS)
def test_zero_gradients_give_zero_maps_not_nan(cls, net, x):
    with torch.no_grad():
        net.fc.weight[3].zero_()  # class 3 does not depend on anything
    with pytest.warns(UserWarning, match="gradient is exactly zero on the whole grid"):
        out = cls(net, net.conv).attribute(x, target=3)
    for cam in out.values() if isinstance(out, dict) else [out]:
        assert torch.equal(cam, torch.zeros_like(cam))
        assert torch.equal(upsample_and_normalize(cam, x.shape[-2:]), torch.zeros(4, 1, 6, 6))


def test_maps_are_finite_on_a_signed_layer_with_extreme_inputs(net):
    x = torch.randn(4, 3, 6, 6) * 1e4
    for stabilizer in ("clamp", "zero"):
        cam = LayerGradCamPlusPlus(net, net.conv, stabilizer=stabilizer).attribute(x, target=1)
        assert torch.isfinite(cam).all()

"""float16 / bfloat16: weights computed in float32, map returned in the layer's dtype, no NaN."""

from __future__ import annotations

import copy

import pytest
import torch

from captum_camplus import LayerCams, LayerGradCamPlusPlus


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_maps_are_finite_and_close_to_float32(dtype, resnet18, images):
    half = copy.deepcopy(resnet18).to(dtype)
    maps = LayerCams(half, half.layer4).attribute(
        images.to(dtype), target=[1, 2, 3], relu_attributions=True
    )
    full = LayerCams(resnet18, resnet18.layer4).attribute(
        images, target=[1, 2, 3], relu_attributions=True
    )
    for name, cam in maps.items():
        assert cam.dtype == dtype, name
        assert torch.isfinite(cam).all(), name
        scale = full[name].abs().amax()
        assert (cam.float() - full[name]).abs().amax() <= 0.1 * scale, name


def test_half_precision_weighting_runs_in_float32():
    """Gradients ~1e-4 and S_k ~1e3: g^2 and g^3 underflow in float16, not in float32."""
    A = torch.full((1, 2, 4, 4), 60.0, dtype=torch.float16)
    g = torch.full((1, 2, 4, 4), 1e-4, dtype=torch.float16)
    method = LayerGradCamPlusPlus(torch.nn.Identity(), torch.nn.Identity(), alpha="paper")
    cam = method.map_from_layer(A, g)
    S = 60.0 * 16
    alpha = 1e-4**2 / (2 * 1e-4**2 + S * 1e-4**3)
    expected = 2 * 60.0 * 16 * alpha * 1e-4  # two channels, 16 positions each
    assert cam.dtype == torch.float16
    torch.testing.assert_close(cam.float(), torch.full((1, 1, 4, 4), expected), rtol=2e-3, atol=0)

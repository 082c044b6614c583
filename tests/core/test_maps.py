"""upsample_and_normalize / normalize_maps against a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from captum_camplus import normalize_maps, upsample_and_normalize


def _reference_min_max(maps: np.ndarray) -> np.ndarray:
    out = np.zeros_like(maps, dtype=np.float64)
    for i, m in enumerate(maps.astype(np.float64)):
        low, high = m.min(), m.max()
        if high > low:
            out[i] = (m - low) / (high - low)
        elif high > 0:
            out[i] = 1.0
    return out


def test_min_max_per_map_matches_reference():
    maps = torch.randn(5, 1, 4, 6, dtype=torch.float64)
    maps[1] = 0.0  # all zero
    maps[2] = 3.0  # constant positive
    maps[3] = -2.0  # constant negative
    got = normalize_maps(maps)
    np.testing.assert_allclose(got.numpy(), _reference_min_max(maps.numpy()), rtol=1e-12)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    assert torch.equal(got[2], torch.ones_like(got[2]))


def test_upsampling_is_bilinear_then_per_map_min_max():
    maps = torch.rand(3, 1, 7, 7)
    got = upsample_and_normalize(maps, (224, 224))
    bilinear = F.interpolate(maps.double(), size=(224, 224), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(got.numpy(), _reference_min_max(bilinear.numpy()), atol=1e-6)
    assert got.shape == (3, 1, 224, 224)
    assert got.amin() == 0 and got.amax() == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_maps(dtype):
    maps = torch.rand(2, 1, 4, 4).to(dtype)
    got = upsample_and_normalize(maps, (8, 8))
    assert got.dtype == torch.float32 and torch.isfinite(got).all()


def test_bad_maps_raise():
    with pytest.raises(ValueError, match="without spatial dimensions"):
        upsample_and_normalize(torch.rand(4, 1), (8, 8))
    with pytest.raises(ValueError, match="NaN or inf"):
        upsample_and_normalize(torch.tensor([[[[0.0, float("nan")]]]]), (2, 4))
    with pytest.raises(ValueError, match="has 1 dims but the maps have 2 spatial dims"):
        upsample_and_normalize(torch.rand(1, 1, 4, 4), (8,))

"""A branch computed before the layer and modified in place after it (timm's GhostNet:
``x = ghost(x)[:, :c]; x += shortcut(inputs)``) does not break the capture, which records only
what follows the layer (found by ``python -m benchmarks.layout_sweep``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import captum_camplus.testing.reference as ref
from captum_camplus import LayerCams, LayerGradCam
from captum_camplus.capture import LayerCapture

TARGET = [3, 1]
REFERENCES = {  # every registered method, at its defaults
    "Grad-CAM": ref.grad_cam,
    "Grad-CAM+": ref.grad_cam_plus,
    "Grad-CAM++": lambda A, g: ref.grad_cam_pp(A, g, form="simplified", stabilizer="clamp"),
    "HiResCAM": ref.hires_cam,
    **ref.CATALOGUE_FORMULAS,
}


class GhostLike(nn.Module):
    """The main branch is a view (a slice of a concatenation) made before ``shortcut`` runs,
    then ``+=`` its output: in-place on a tensor made without gradients, after the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.ghost = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        shortcut = x
        main = self.ghost(x)
        main = torch.cat([main, main], dim=1)[:, :4]  # a view
        main += self.shortcut(shortcut)
        return self.head(main.mean(dim=(2, 3)))


def _setup():
    torch.manual_seed(0)
    model = GhostLike().eval()
    x = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    return model, x


def test_the_layer_before_an_in_place_add_on_a_view_is_captured():
    model, x = _setup()
    capture = LayerCapture(model, model.shortcut, x)
    score = capture.outputs[torch.arange(2), torch.tensor(TARGET)].sum()
    (g,) = capture.gradients(score)
    model64 = GhostLike().double().eval()
    model64.load_state_dict(model.state_dict())
    A64, g64 = ref.capture_layer(model64, model64.shortcut, x.double(), TARGET)
    np.testing.assert_allclose(capture.activation.detach().double(), A64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g.double(), g64, rtol=1e-5, atol=1e-6)


def test_every_method_at_that_layer_matches_its_float64_reference():
    model, x = _setup()
    model64 = GhostLike().double().eval()
    model64.load_state_dict(model.state_dict())
    A, g = ref.capture_layer(model64, model64.shortcut, x.double(), TARGET)
    # the in-place add after the layer needs as many rows before it as after: Ablation-CAM
    # runs its ablated rows from the input, and says so
    with pytest.warns(RuntimeWarning, match="Ablation-CAM runs each of its edited rows"):
        maps = LayerCams(model, model.shortcut, methods=["all"]).attribute(x, target=TARGET)
    for method, formula in REFERENCES.items():
        expected = formula(A, g)
        scale = np.abs(expected).max()
        assert np.abs(maps[method].double().numpy() - expected).max() <= 1e-4 * scale, method
    single = LayerGradCam(model, model.shortcut).attribute(x, target=TARGET)
    torch.testing.assert_close(single, maps["Grad-CAM"])

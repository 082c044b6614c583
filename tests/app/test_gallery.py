"""The gallery redraws each map as the run computed it: same method, kind of map and scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")
from camplus_app.gallery import build_galleries  # noqa: E402
from captum_camplus.maps import upsample_and_normalize  # noqa: E402
from metrics import compute_cams, evaluate_methods  # noqa: E402


def _binary_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 1),
    ).eval()


def test_gallery_maps_use_the_runs_scores() -> None:
    """A one-logit model under ``scores="sigmoid"``: the gallery draws the run's post-sigmoid
    maps (a gallery that forgot the run's scores would ask for the softmax of one logit)."""
    scores = "sigmoid"
    model = _binary_model()
    torch.manual_seed(1)
    images = torch.rand(6, 3, 8, 8)
    methods = ["Grad-CAM", "Grad-CAM+"]
    result = evaluate_methods(
        model,
        model[2],
        images,
        methods,
        labels=torch.zeros(6, dtype=torch.long),
        maps_from=["post-softmax"],
        scores=scores,
        progress=False,
    )
    galleries = build_galleries(
        result,
        model,
        model[2],
        lambda position: images[position],
        str,
        str,
        layout=None,
    )
    assert galleries, "two methods that differ on some image make a gallery"
    figure_rows = galleries[0].images
    positions = [int(name) for name in figure_rows]
    expected = compute_cams(
        model,
        model[2],
        images[positions],
        torch.zeros(len(positions), dtype=torch.long),
        methods,
        "post-softmax",
        scores=scores,
    )
    drawn = [axis for axis in galleries[0].figure.axes if axis.images]
    for row, position in enumerate(positions):
        heatmaps = drawn[row * 3 + 1 : row * 3 + 3]  # the image, then one axis per method
        for axis, method in zip(heatmaps, methods, strict=True):
            assert axis.get_title().startswith(method)
            want = upsample_and_normalize(expected[method][row : row + 1], (8, 8))[0, 0]
            np.testing.assert_allclose(axis.images[1].get_array(), want.numpy(), atol=1e-6)
        assert galleries[0].images[row] == str(position)

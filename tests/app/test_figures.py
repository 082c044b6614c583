"""Figures: what is drawn is the data given, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
from camplus_app import figures  # noqa: E402


def test_overlay_figure_draws_image_and_each_heatmap() -> None:
    image = torch.rand(3, 8, 10)
    heatmaps = {"A": torch.rand(1, 8, 10), "B": torch.rand(8, 10)}
    figure = figures.overlay_figure(image, heatmaps, "tabby (class 281)")
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == ["image", "A", "B"]
    assert figure.get_suptitle() == "tabby (class 281)"
    np.testing.assert_allclose(axes[0].images[0].get_array(), image.permute(1, 2, 0).numpy())
    for axis, heat in zip(axes[1:], heatmaps.values(), strict=True):
        shown = axis.images[1].get_array()
        np.testing.assert_allclose(shown, heat.squeeze(0).numpy(), rtol=1e-6)
        assert axis.images[1].get_clim() == (0.0, 1.0)


def test_overlay_figure_errors() -> None:
    with pytest.raises(ValueError, match="heatmap has shape"):
        figures.overlay_figure(torch.rand(3, 8, 8), {"A": torch.rand(1, 7, 7)}, "t")
    with pytest.raises(ValueError, match="expected one"):
        figures.overlay_figure(torch.rand(1, 3, 8, 8), {}, "t")


def test_relative_performance_boxplot() -> None:
    ratios = {
        "pre-softmax maps": {"B vs A": [0.5, 0.8, 2.0], "C vs A": [1.1, 1.7, 3.0]},
        "post-softmax maps": {"B vs A": [1.0, 1.0, 1.0], "C vs A": [0.9, 1.1, 1.2]},
    }
    figure = figures.relative_performance_boxplot(ratios)
    left, right = figure.axes
    assert left.get_title() == "pre-softmax maps" and left.get_xscale() == "log"
    labels = {
        t.get_text(): y for t, y in zip(left.get_yticklabels(), left.get_yticks(), strict=True)
    }
    assert labels == {"B vs A": 2, "C vs A": 1}  # first pair on top
    vertical = {float(line.get_xdata()[0]) for line in left.lines if _is_vertical(line)}
    assert {0.8, 1.7} <= vertical  # the medians drawn are those of the data
    with pytest.raises(ValueError, match="no relative performances"):
        figures.relative_performance_boxplot({})


def test_alpha_histogram_leaves_out_zeros() -> None:
    alphas = torch.tensor([[0.0, 0.5, 0.49], [0.0, 0.3, -2.0]])
    figure = figures.alpha_histogram(alphas, bins=10)
    left, right = figure.axes
    for axis in (left, right):  # stairs of the counts: one StepPatch per panel
        (stairs,) = axis.patches
        assert stairs.get_data().values.sum() == 4
    assert "4 entries" in left.get_title()
    with pytest.raises(ValueError, match="no non-zero alphas"):
        figures.alpha_histogram(torch.zeros(3))


def _is_vertical(line) -> bool:
    x = np.asarray(line.get_xdata(), dtype=float)
    return x.size > 0 and np.ptp(x) == 0

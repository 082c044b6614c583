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
    assert [axis.get_title() for axis in axes[:3]] == ["image", "A", "B"]
    assert figure.get_suptitle() == "tabby (class 281)"
    (bar,) = axes[3:]  # the colour bar, 0 to 1, says the maps are normalised one by one
    assert "normalised per map" in bar.get_ylabel()
    assert bar.get_ylim() == (0.0, 1.0)
    assert any(text.get_text() == figures.NORMALISED_CAPTION for text in figure.texts)
    np.testing.assert_allclose(axes[0].images[0].get_array(), image.permute(1, 2, 0).numpy())
    for axis, heat in zip(axes[1:3], heatmaps.values(), strict=True):
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
    assert left.get_title() == "pre-softmax maps (n = 3 images)" and left.get_xscale() == "log"
    ticks = [t.get_text() for t in left.get_xticklabels()]
    assert len(ticks) >= 3 and "1" in ticks
    labels = {
        t.get_text(): y for t, y in zip(left.get_yticklabels(), left.get_yticks(), strict=True)
    }
    assert labels == {"B vs A": 2, "C vs A": 1}  # first pair on top
    vertical = {float(line.get_xdata()[0]) for line in left.lines if _is_vertical(line)}
    assert {0.8, 1.7} <= vertical  # the medians drawn are those of the data
    with pytest.raises(ValueError, match="no relative performances"):
        figures.relative_performance_boxplot({})
    dots = [line for line in left.lines if line.get_marker() == "."]
    heights = np.concatenate([line.get_ydata() for line in dots])
    assert len(set(heights.tolist())) == 6  # jittered: no two dots on one line
    again = figures.relative_performance_boxplot(ratios).axes[0].lines
    assert np.array_equal(again[0].get_ydata(), dots[0].get_ydata())  # seeded


@pytest.mark.parametrize(
    ("low", "high"),
    [(0.999, 1.002), (0.98, 1.03), (0.5, 3.0), (0.2, 40.0), (1e-30, 1e5), (1.0, 1.0)],
)
def test_log_ticks_are_readable_at_any_range(low: float, high: float) -> None:
    ticks, labels = figures.log_ticks(low, high)
    assert 3 <= len(ticks) <= 12
    assert len(set(labels)) == len(labels)  # no two ticks read the same
    assert all(min(low, 1.0) / 1.06 <= t <= max(high, 1.0) * 1.06 for t in ticks)
    assert [float(label) for label in labels] == pytest.approx(ticks, rel=1e-9)


def test_figure_files_are_200_dpi_png_and_svg() -> None:
    figure = figures.relative_performance_boxplot({"p": {"B vs A": [0.9, 1.1]}})
    files = figures.figure_files(figure)
    assert files["png"].startswith(b"\x89PNG") and b"<svg" in files["svg"]
    width = int.from_bytes(files["png"][16:20], "big")
    assert width == round(figure.get_figwidth() * figures.DPI)
    assert b"<dc:date>" not in files["svg"]


def test_alpha_histogram_leaves_out_zeros() -> None:
    alphas = torch.tensor([[0.0, 0.5, 0.49], [0.0, 0.3, -2.0]])
    figure = figures.alpha_histogram(alphas, bins=10)
    left, right = figure.axes
    for axis in (left, right):  # stairs of the counts: one StepPatch per panel
        (stairs,) = axis.patches
        assert stairs.get_data().values.sum() == 4
        assert axis.get_yscale() == "log" and axis.get_ylabel() and axis.get_xlabel()
    assert "n = 4" in left.get_title()
    assert right.get_xscale() == "symlog"


def test_alpha_histogram_tail_panel_shows_the_raw_alphas() -> None:
    used, raw = figures.AlphaHistogram(), figures.AlphaHistogram()
    used.add(torch.tensor([0.5, 0.49, 0.3, 0.5]))
    raw.add(torch.tensor([0.5, 0.49, -1.4e6, 5.6e5]))  # Lerma & Lucas, section 3.4
    left, right = figures.alpha_histogram(used, raw, bins=10).axes
    (stairs,) = right.patches
    edges = stairs.get_data().edges
    assert edges[0] <= -1.4e6 and edges[-1] >= 5.6e5
    assert "before the stabilizer" in right.get_title()
    notes = " ".join(text.get_text() for text in right.texts)
    assert "2 outside (0, 1/2]" in notes
    with pytest.raises(ValueError, match="no non-zero alphas"):
        figures.alpha_histogram(torch.zeros(3))


def test_disagreements_pick_the_pairs_and_images_apart() -> None:
    log_ratios = {
        "B vs A": torch.tensor([0.0, 1e-7, -1e-7, 0.0]),  # equal methods
        "C vs A": torch.tensor([2.0, -1.0, 0.5, -3.0]),
        "C vs B": torch.tensor([1.0, 0.0, 0.2, -0.1]),
        "A vs C": torch.tensor([-2.0, 1.0, -0.5, 3.0]),  # C vs A again, the other way
    }
    chosen = figures.disagreements(log_ratios, pairs=2, images=2)
    assert [pair for pair, _, _ in chosen] == ["C vs A", "C vs B"]
    _, first, second = chosen[0]
    assert first.tolist() == [0, 2] and second.tolist() == [3, 1]
    _, first, second = chosen[1]
    assert first.tolist() == [0, 2] and second.tolist() == [3]  # one image leans that way


def test_gallery_figure_shares_one_scale_per_row() -> None:
    image = torch.rand(3, 8, 8)
    rows = [
        figures.GalleryRow(
            f"img{k}.jpg",
            "tabby (281)",
            image,
            {"A": torch.rand(8, 8) * (k + 1), "B": torch.rand(8, 8) * 5},
            0.9,
            {"A": 0.25, "B": 0.5},
        )
        for k in range(2)
    ]
    figure = figures.gallery_figure(rows, "B vs A")
    images = [axis for axis in figure.axes if axis.images]
    assert len(images) == 6
    assert images[0].get_title() == "img0.jpg\ntabby (281), Y = 0.9"
    assert images[2].get_title() == "B\nO = 0.5"
    for row in (images[0:3], images[3:6]):
        top = max(float(r.heatmaps[m].max()) for r in rows[:1] for m in ("A", "B"))
        limits = {axis.images[1].get_clim() for axis in row[1:]}
        assert len(limits) == 1  # one scale per row
    assert images[1].images[1].get_clim() == (0.0, top)
    assert len(figure.axes) == 8  # and one colour bar per row
    with pytest.raises(ValueError, match="at least one image"):
        figures.gallery_figure([], "t")


def _is_vertical(line) -> bool:
    x = np.asarray(line.get_xdata(), dtype=float)
    return x.size > 0 and np.ptp(x) == 0

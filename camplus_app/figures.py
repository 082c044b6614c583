"""Figures of the command line: heatmap overlays, relative-performance boxplots, alpha histograms.

Each function returns a matplotlib ``Figure`` drawn without a display (Agg canvas), so it can be
saved from scripts, tests and servers alike.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _hwc(image: Tensor) -> np.ndarray:
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"expected one (C, H, W) image with 1 or 3 channels, got {tuple(image.shape)}"
        )
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def overlay_figure(
    image: Tensor, heatmaps: Mapping[str, Tensor], title: str, alpha: float = 0.5
) -> Figure:
    """The image, then each method's heatmap over it, side by side.

    Args:
        image: ``(3, H, W)`` in [0, 1].
        heatmaps: Method name -> ``(H, W)`` or ``(1, H, W)`` map in [0, 1] (e.g. from
            :func:`captum_camplus.upsample_and_normalize`), same size as the image.
        title: Figure title, e.g. the class explained.
        alpha: Opacity of the heatmaps.
    """
    pixels = _hwc(image)
    figure = _figure(2.6 * (1 + len(heatmaps)), 3.0)
    axes = figure.subplots(1, 1 + len(heatmaps), squeeze=False)[0]
    axes[0].imshow(pixels)
    axes[0].set_title("image")
    for axis, (name, heatmap) in zip(axes[1:], heatmaps.items(), strict=True):
        heat = heatmap.detach().float().squeeze(0).cpu().numpy()
        if heat.shape != pixels.shape[:2]:
            raise ValueError(
                f"the {name} heatmap has shape {heat.shape}, the image {pixels.shape[:2]}: "
                "upsample the maps to the image first"
            )
        axis.imshow(pixels)
        axis.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
        axis.set_title(name)
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(title)
    return figure


def relative_performance_boxplot(ratios: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Boxplots of per-image relative performance ``O'_i / O_i`` (Lerma & Lucas, fig. 6), log scale,
    each image drawn as a dot.

    Args:
        ratios: Panel title (e.g. "pre-softmax maps") -> pair label (e.g. "Grad-CAM++ vs
            Grad-CAM") -> the per-image ratios.
    """
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    if not ratios:
        raise ValueError("no relative performances to plot")
    pairs = list(next(iter(ratios.values())))
    figure = _figure(1.2 + 5.0 * len(ratios), 1.2 + 0.5 * len(pairs))
    axes = figure.subplots(1, len(ratios), sharex=True, sharey=True, squeeze=False)[0]
    positions = np.arange(len(pairs), 0, -1)  # first pair on top
    for axis, (panel, by_pair) in zip(axes, ratios.items(), strict=True):
        data = [np.asarray(by_pair[pair], dtype=np.float64) for pair in pairs]
        axis.boxplot(
            data,
            positions=positions,
            orientation="horizontal",
            manage_ticks=False,
            showfliers=False,  # every image is drawn as a dot below
        )
        for values, position in zip(data, positions, strict=True):  # each image, as a dot
            axis.plot(values, np.full_like(values, position), ".", color="tab:blue", alpha=0.5)
        axis.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("relative performance O'/O per image (log scale)")
        axis.set_title(panel)
    axes[0].set_yticks(positions, pairs)
    return figure


def alpha_histogram(alphas: Tensor, bins: int = 60) -> Figure:
    """Histograms of the non-zero Grad-CAM++ alphas (Lerma & Lucas, figures 3-4).

    Left: the alphas themselves; right: ``tanh(alpha - 1/2)``, which shows every value, outliers
    included, in [-1, 1] as Lerma & Lucas, figure 4 does.

    Args:
        alphas: Alphas of any shape; zeros (entries with ``g <= 0``, which do not reach the
            weights) are left out, as in Lerma & Lucas, section 3.3.
    """
    values = alphas.detach().double().flatten()
    values = values[values != 0].cpu().numpy()
    if values.size == 0:
        raise ValueError("no non-zero alphas to plot (no entry had a positive gradient)")
    figure = _figure(10.0, 3.4)
    left, right = figure.subplots(1, 2)
    left.hist(values, bins=bins, color="tab:blue")
    left.set_xlabel("alpha")
    left.set_ylabel("entries")
    left.set_title(f"non-zero Grad-CAM++ alphas: {values.size} entries")
    right.hist(np.tanh(values - 0.5), bins=bins, range=(-1, 1), color="tab:orange")
    right.set_xlabel("tanh(alpha - 0.5)")
    right.set_title(
        f"range [{values.min():.4g}, {values.max():.4g}], median {np.median(values):.4g}"
    )
    return figure

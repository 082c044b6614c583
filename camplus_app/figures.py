"""Figures of the command line: heatmap overlays, relative-performance boxplots, alpha histograms.

Each function returns a matplotlib ``Figure`` drawn without a display (Agg canvas), so it can be
saved from scripts, tests and servers alike.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from camplus_app.runs import printable

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
    figure.suptitle(printable(title))  # an undecodable file name as \xHH, not a TypeError
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


class AlphaHistogram:
    """Counts of non-zero Grad-CAM++ alphas in fixed bins, filled batch by batch.

    The bins are :data:`BINS` equal steps of ``t = tanh(alpha - 1/2)`` over [-1, 1]: every real
    alpha, outliers included, falls in one, finely near 1/2 where the alphas of a layer after a
    ReLU lie, so histograms of runs, batches and processes add up exactly and memory stays flat.
    Zeros (entries with ``g <= 0``, which do not reach the weights) are left out, as in
    Lerma & Lucas, section 3.3. The exact minimum and maximum are kept beside the counts.
    """

    BINS = 2000

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS, dtype=np.int64)
        self.min = math.inf
        self.max = -math.inf

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, alphas: Tensor) -> None:
        """Count the non-zero entries of ``alphas`` (any shape, any device)."""
        values = alphas.detach().flatten()
        values = values[values != 0].double()
        if values.numel() == 0:
            return
        t = torch.tanh(values - 0.5)
        bins = ((t + 1) * (self.BINS / 2)).long().clamp_(0, self.BINS - 1)
        self.counts += torch.bincount(bins, minlength=self.BINS).cpu().numpy()
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    def merge(self, other: AlphaHistogram) -> None:
        self.counts += other.counts
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    def to_json(self) -> dict[str, object]:
        """The non-empty bins, for a JSON line."""
        (bins,) = np.nonzero(self.counts)
        return {
            "bins": bins.tolist(),
            "counts": self.counts[bins].tolist(),
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> AlphaHistogram:
        histogram = cls()
        histogram.counts[np.asarray(data["bins"], dtype=np.int64)] = data["counts"]
        histogram.min, histogram.max = float(data["min"]), float(data["max"])  # type: ignore[arg-type]
        return histogram

    def t_edges(self) -> np.ndarray:
        """Bin edges in ``t = tanh(alpha - 1/2)``."""
        return np.linspace(-1.0, 1.0, self.BINS + 1)

    def median(self) -> float:
        """The median alpha, to within one bin (the centre of the bin holding it)."""
        if self.total == 0:
            return math.nan
        middle = int(np.searchsorted(np.cumsum(self.counts), self.total / 2))
        centre = (self.t_edges()[middle] + self.t_edges()[middle + 1]) / 2
        return float(np.clip(0.5 + np.arctanh(centre), self.min, self.max))

    def rebinned(self, edges: np.ndarray, in_t: bool) -> np.ndarray:
        """Counts in coarser ``edges`` (of ``t``, or of alpha), each fine bin by its centre."""
        t = self.t_edges()
        centres = (t[:-1] + t[1:]) / 2
        if not in_t:
            with np.errstate(divide="ignore"):
                centres = np.clip(0.5 + np.arctanh(centres), self.min, self.max)
        where = np.clip(np.searchsorted(edges, centres, side="right") - 1, 0, len(edges) - 2)
        return np.bincount(where, weights=self.counts, minlength=len(edges) - 1)


def alpha_histogram(alphas: Tensor | AlphaHistogram, bins: int = 60) -> Figure:
    """Histograms of the non-zero Grad-CAM++ alphas (Lerma & Lucas, figures 3-4).

    Left: the alphas themselves; right: ``tanh(alpha - 1/2)``, which shows every value, outliers
    included, in [-1, 1] as their figure 4 does.

    Args:
        alphas: Alphas of any shape (zeros are left out), or their :class:`AlphaHistogram`.
        bins: Bins of each panel.
    """
    if isinstance(alphas, Tensor):
        histogram = AlphaHistogram()
        histogram.add(alphas)
    else:
        histogram = alphas
    if histogram.total == 0:
        raise ValueError("no non-zero alphas to plot (no entry had a positive gradient)")
    low, high = histogram.min, histogram.max
    alpha_edges = (
        np.linspace(low, high, bins + 1) if high > low else np.array([low - 0.5, low + 0.5])
    )
    t_edges = np.linspace(-1.0, 1.0, bins + 1)
    figure = _figure(10.0, 3.4)
    left, right = figure.subplots(1, 2)
    left.stairs(histogram.rebinned(alpha_edges, in_t=False), alpha_edges, fill=True)
    left.set_xlabel("alpha")
    left.set_ylabel("entries")
    left.set_title(f"non-zero Grad-CAM++ alphas: {histogram.total} entries")
    right.stairs(histogram.rebinned(t_edges, in_t=True), t_edges, fill=True, color="tab:orange")
    right.set_xlabel("tanh(alpha - 0.5)")
    right.set_title(f"range [{low:.4g}, {high:.4g}], median ≈ {histogram.median():.3g}")
    return figure

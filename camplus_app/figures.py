"""Figures of the command line: heatmap overlays, relative-performance plots, alpha histograms,
and a gallery of the images on which two methods disagree most.

Each function returns a matplotlib ``Figure`` drawn without a display (Agg canvas), so it can be
saved from scripts, tests and servers alike; :func:`figure_files` renders one as a 200 dpi PNG
(and, for plots, an SVG; a figure of raster images is PNG only: its SVG would only wrap the
pixels, several MB each). Every axis is labelled, every panel says how many images it shows.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from camplus_app.textsafe import printable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure

#: Resolution of the PNG files.
DPI = 200
#: Log ratios closer than this (1 %), image by image, tell the same story: a pair through a
#: method equal or nearly equal to another (HiResCAM and Grad-CAM, Grad-CAM++ and Grad-CAM+).
SAME_DISAGREEMENT = 1e-2
#: Colour map of the heatmaps.
HEATMAP_COLOURS = "jet"
#: What every overlay of normalised maps says about them.
NORMALISED_CAPTION = (
    "Each heatmap is min-max normalised on its own (its smallest value 0, its largest 1) and "
    "upsampled to the image: colours compare places within a map, not maps with each other."
)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_files(figure: Figure, kinds: Sequence[str] = ("png", "svg")) -> dict[str, bytes]:
    """The figure as ``{"png": ..., "svg": ...}`` bytes (PNG at :data:`DPI` dpi).

    The SVG carries no date.
    """
    files = {}
    for kind in kinds:
        buffer = io.BytesIO()
        metadata = {"Date": None} if kind == "svg" else None
        figure.savefig(buffer, format=kind, dpi=DPI, metadata=metadata)
        files[kind] = buffer.getvalue()
    return files


def _hwc(image: Tensor) -> np.ndarray:
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"expected one (C, H, W) image with 1 or 3 channels, got {tuple(image.shape)}"
        )
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _heat(name: str, heatmap: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    heat = heatmap.detach().float().squeeze(0).cpu().numpy()
    if heat.shape != shape:
        raise ValueError(
            f"the {name} heatmap has shape {heat.shape}, the image {shape}: "
            "upsample the maps to the image first"
        )
    return heat


def overlay_figure(
    image: Tensor, heatmaps: Mapping[str, Tensor], title: str, alpha: float = 0.5
) -> Figure:
    """The image, then each method's heatmap over it, side by side, with a colour bar and a
    caption that says how the maps were normalised (:data:`NORMALISED_CAPTION`).

    Args:
        image: ``(3, H, W)`` in [0, 1].
        heatmaps: Method name -> ``(H, W)`` or ``(1, H, W)`` map in [0, 1], each min-max
            normalised on its own (e.g. by :func:`captum_camplus.upsample_and_normalize`),
            same size as the image.
        title: Figure title, e.g. the class explained.
        alpha: Opacity of the heatmaps.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    pixels = _hwc(image)
    figure = _figure(2.6 * (1 + len(heatmaps)) + 0.8, 3.5)
    axes = figure.subplots(1, 1 + len(heatmaps), squeeze=False)[0]
    axes[0].imshow(pixels)
    axes[0].set_title("image")
    for axis, (name, heatmap) in zip(axes[1:], heatmaps.items(), strict=True):
        heat = _heat(name, heatmap, pixels.shape[:2])
        axis.imshow(pixels)
        axis.imshow(heat, cmap=HEATMAP_COLOURS, alpha=alpha, vmin=0.0, vmax=1.0)
        axis.set_title(name)
    for axis in axes:
        axis.set_axis_off()
    if heatmaps:
        bar = _colour_bar(figure, list(axes), 1.0, shrink=0.8)
        bar.set_label("heatmap, min-max normalised per map")
    figure.suptitle(printable(title))  # an undecodable file name as \xHH, not a TypeError
    figure.text(0.5, 0.01, NORMALISED_CAPTION, ha="center", va="bottom", fontsize=7, wrap=True)
    figure.set_layout_engine(ConstrainedLayoutEngine(rect=(0, 0.07, 1, 0.93)))  # room for it
    return figure


@dataclass(frozen=True)
class BoxPanel:
    """One detection to draw: its box ``(x1, y1, x2, y2)`` in the image's pixels, its caption
    (label and score) and each method's ``(H, W)`` map of it on the image, in [0, 1]."""

    box: tuple[float, float, float, float]
    caption: str
    heatmaps: Mapping[str, Tensor]


def detection_figure(
    image: Tensor, panels: Sequence[BoxPanel], title: str, alpha: float = 0.5
) -> Figure:
    """A grid of the image, one row per detection and one column per method: each panel the
    method's map of that detection over the image at its own size, with the box and its
    caption drawn on it (each map normalised on its own, :data:`NORMALISED_CAPTION`).

    Args:
        image: ``(3, H, W)`` in [0, 1].
        panels: The detections, each with the same methods.
        title: Figure title, e.g. the image's name.
        alpha: Opacity of the heatmaps.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.patches import Rectangle

    if not panels:
        raise ValueError("no detections to draw")
    pixels = _hwc(image)
    methods = list(panels[0].heatmaps)
    height, width = pixels.shape[:2]
    side = 2.6 * min(1.0, height / width) + 0.4  # a panel's height for a 2.6-inch width
    figure = _figure(2.6 * len(methods) + 0.8, side * len(panels) + 1.0)
    axes = figure.subplots(len(panels), len(methods), squeeze=False)
    for row, panel in zip(axes, panels, strict=True):
        x1, y1, x2, y2 = panel.box
        for axis, method in zip(row, methods, strict=True):
            axis.imshow(pixels)
            heat = _heat(method, panel.heatmaps[method], pixels.shape[:2])
            axis.imshow(heat, cmap=HEATMAP_COLOURS, alpha=alpha, vmin=0.0, vmax=1.0)
            axis.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1.5)
            )
            axis.text(
                x1,
                y1,
                printable(panel.caption),
                color="black",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
            )
            axis.set_title(method, fontsize=9)
            axis.set_axis_off()
    bar = _colour_bar(figure, list(axes.ravel()), 1.0, shrink=0.8)
    bar.set_label("heatmap, min-max normalised per map")
    figure.suptitle(printable(title))
    figure.text(0.5, 0.01, NORMALISED_CAPTION, ha="center", va="bottom", fontsize=7, wrap=True)
    figure.set_layout_engine(ConstrainedLayoutEngine(rect=(0, 0.06, 1, 0.94)))
    return figure


def _colour_bar(
    figure: Figure, axes: list[Axes], top: float, shrink: float, pad: float = 0.05
) -> Colorbar:
    """An opaque colour bar of the heatmaps' colours from 0 to ``top`` beside ``axes``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = ScalarMappable(Normalize(0.0, top), HEATMAP_COLOURS)
    return figure.colorbar(scale, ax=axes, shrink=shrink, pad=pad)


def relative_performance_boxplot(
    ratios: Mapping[str, Mapping[str, Sequence[float]]], seed: int = 0
) -> Figure:
    """Boxplots of per-image relative performance ``O'_i / O_i`` (Lerma & Lucas, fig. 6) on a
    log axis, each image a jittered dot, each median a red line with its value.

    The ticks are chosen for the data's range (:func:`log_ticks`), so values can be read
    whether the ratios span 1 % or 30 decades; each panel's title gives its number of images.

    Args:
        ratios: Panel title (e.g. "pre-softmax maps") -> pair label (e.g. "Grad-CAM++ vs
            Grad-CAM") -> the per-image ratios (positive).
        seed: Seeds the vertical jitter of the dots (the same data, the same figure).
    """
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    if not ratios:
        raise ValueError("no relative performances to plot")
    pairs = list(next(iter(ratios.values())))
    data = {
        panel: [np.asarray(by_pair[pair], dtype=np.float64) for pair in pairs]
        for panel, by_pair in ratios.items()
    }
    values = np.concatenate([v for panel in data.values() for v in panel])
    if values.size == 0 or not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("relative performances must be positive and finite, one per image")
    ticks, labels = log_ticks(float(values.min()), float(values.max()))
    jitter = np.random.default_rng(seed)
    figure = _figure(1.6 + 5.2 * len(ratios), 1.4 + 0.6 * len(pairs))
    axes = figure.subplots(1, len(ratios), sharex=True, sharey=True, squeeze=False)[0]
    positions = np.arange(len(pairs), 0, -1)  # first pair on top
    for axis, (panel, series) in zip(axes, data.items(), strict=True):
        for values_of_pair, position in zip(series, positions, strict=True):
            offsets = jitter.uniform(-0.18, 0.18, values_of_pair.size)
            axis.plot(
                values_of_pair,
                position + offsets,
                ".",
                color="tab:blue",
                alpha=0.5,
                markersize=4,
                zorder=3,
            )
        axis.boxplot(
            series,
            positions=positions,
            orientation="horizontal",
            manage_ticks=False,
            showfliers=False,  # every image is drawn as a dot
            widths=0.5,
            medianprops={"color": "tab:red", "linewidth": 2},
            boxprops={"linewidth": 1.2},
            zorder=2,
        )
        for values_of_pair, position in zip(series, positions, strict=True):
            median = float(np.median(values_of_pair))
            axis.annotate(
                f"median {median:.4g}",
                (median, position + 0.27),
                ha="center",
                va="bottom",
                fontsize=7,
                color="tab:red",
            )
        axis.axvline(1.0, color="grey", linestyle="--", linewidth=1, zorder=0)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(FixedLocator(ticks))
        axis.set_xticks(ticks, labels)
        axis.xaxis.set_minor_locator(NullLocator())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(axis="x", linewidth=0.5, alpha=0.4)
        axis.set_xlabel("relative performance O'/O per image (log scale)")
        counts = sorted({v.size for v in series})
        n = str(counts[0]) if len(counts) == 1 else "/".join(map(str, counts))
        axis.set_title(f"{panel} (n = {n} images)")
    axes[0].set_yticks(positions, pairs)
    axes[0].set_ylim(0.4, len(pairs) + 0.7)
    return figure


def log_ticks(low: float, high: float, most: int = 8) -> tuple[list[float], list[str]]:
    """Tick positions and labels for a log axis over ``[low, high]``: at least three readable
    ticks at any range, labelled with just the digits that tell them apart.

    1-2-5 steps (0.2, 0.5, 1, 2...); over many decades, every k-th power of ten; over less than
    a decade, evenly spaced round values (0.98, 0.99, 1, 1.01...); 1 is always on the axis.
    """
    from matplotlib.ticker import MaxNLocator

    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(f"a log axis needs 0 < low <= high, got [{low}, {high}]")
    low, high = min(low, 1.0), max(high, 1.0)  # 1, "equal", is always on the axis
    if high / low < 1.05:  # pad a narrow range so that round ticks fall inside
        middle = math.sqrt(low * high)
        low, high = middle / 1.05, middle * 1.05
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = [m * 10.0**k for k in range(first, last + 1) for m in (1, 2, 5)]
    ticks = [t for t in steps if low <= t <= high]
    if len(ticks) > 10:  # many decades: every k-th power of ten
        step = max(1, math.ceil((last - first + 1) / most))
        ticks = [
            10.0**k for k in range(first, last + 1) if k % step == 0 and low <= 10.0**k <= high
        ]
    elif len(ticks) < 3:  # less than a decade: round values in between
        ticks = [float(t) for t in MaxNLocator(6).tick_values(low, high) if low <= t <= high]
    return ticks, _tick_labels(ticks)


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """The shortest labels that tell neighbouring ticks apart: plain decimals from 1e-4 to 1e5
    (``0.01``, ``100``), powers of ten beyond (``1e-30``)."""
    for digits in range(1, 16):
        labels = [_plain(t, digits) for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(t) for t in ticks]


def _plain(value: float, digits: int) -> str:
    if value == 0 or 1e-4 <= abs(value) < 1e5:
        return np.format_float_positional(float(f"{value:.{digits}g}"), trim="-")
    return f"{value:.{digits}g}".replace("e+", "e").replace("e0", "e").replace("e-0", "e-")


class AlphaHistogram:
    """Counts of non-zero Grad-CAM++ alphas in fixed bins, filled batch by batch.

    The bins are :data:`BINS` equal steps of ``u = asinh(SCALE (alpha - 1/2))`` over
    ``[-U_MAX, U_MAX]``: steps of about 1e-5 in alpha right at 1/2, where the alphas of a layer
    after a ReLU pile up, widening in proportion to the distance from 1/2 (1.3 % of it), so the
    bulk and tails of 1e20 both keep their shape. Fixed bins make histograms of runs, batches
    and processes add up exactly with flat memory. Zeros (entries with ``g <= 0``, which do not
    reach the weights) are left out, as in Lerma & Lucas, section 3.3. The exact minimum and
    maximum are kept beside the counts.
    """

    BINS = 8000
    SCALE = 1000.0
    U_MAX = 54.0  # asinh(SCALE * 1e20)

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
        u = torch.asinh((values - 0.5) * self.SCALE)
        bins = ((u + self.U_MAX) * (self.BINS / (2 * self.U_MAX))).floor().long()
        bins = bins.clamp_(0, self.BINS - 1)
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
            "binning": self.binning(),
            "bins": bins.tolist(),
            "counts": self.counts[bins].tolist(),
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def binning(cls) -> str:
        """The bins' name, kept with the counts: counts of other bins cannot be added."""
        return f"asinh {cls.SCALE:g} {cls.U_MAX:g} {cls.BINS}"

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> AlphaHistogram:
        """The histogram of :meth:`to_json`; ValueError for counts in other bins, or in bins
        that the record does not name (they cannot be added to these)."""
        if data.get("binning") != cls.binning():
            raise ValueError(
                f"alpha counts in bins {data.get('binning', 'that the record does not name')!r}, "
                f"not {cls.binning()!r}: score the run again in a new folder"
            )
        histogram = cls()
        bins = np.asarray(data["bins"], dtype=np.int64)
        histogram.counts[bins] = np.asarray(data["counts"], dtype=histogram.counts.dtype)
        histogram.min, histogram.max = float(data["min"]), float(data["max"])  # type: ignore[arg-type]
        return histogram

    def centres(self) -> np.ndarray:
        """Each bin's centre in alpha, clipped to the range seen."""
        u = np.linspace(-self.U_MAX, self.U_MAX, self.BINS + 1)
        alphas = 0.5 + np.sinh((u[:-1] + u[1:]) / 2) / self.SCALE
        return np.clip(alphas, self.min, self.max) if self.total else alphas

    def median(self) -> float:
        """The median alpha, to within one bin (the centre of the bin holding it)."""
        if self.total == 0:
            return math.nan
        middle = int(np.searchsorted(np.cumsum(self.counts), self.total / 2))
        return float(self.centres()[middle])

    def outside(self, low: float, high: float) -> int:
        """Entries below ``low`` or above ``high``, to within one bin."""
        u = np.linspace(-self.U_MAX, self.U_MAX, self.BINS + 1)
        edges = 0.5 + np.sinh(u) / self.SCALE
        below, above = edges[1:] <= low, edges[:-1] >= high
        above[np.searchsorted(edges, high, side="right") - 1] = False  # the bin holding high
        return int(self.counts[below | above].sum())

    def rebinned(self, edges: np.ndarray) -> np.ndarray:
        """Counts in coarser alpha ``edges``, each fine bin by its centre."""
        where = np.searchsorted(edges, self.centres(), side="right") - 1
        where = np.clip(where, 0, len(edges) - 2)
        return np.bincount(where, weights=self.counts, minlength=len(edges) - 1)


def alpha_histogram(
    alphas: Tensor | AlphaHistogram, raw: AlphaHistogram | None = None, bins: int = 60
) -> Figure:
    """Histograms of the non-zero Grad-CAM++ alphas (Lerma & Lucas, figures 3-4), counts on a
    log axis.

    Left: the alphas the maps used, over their range. Right: the tail, the alphas of eq. 13
    before the stabilizer (``raw``; without it, the same alphas) over their whole range on a
    symmetric log axis, with 0 and 1/2 marked: a layer after a ReLU keeps them in (0, 1/2].

    Args:
        alphas: Alphas of any shape (zeros are left out), or their :class:`AlphaHistogram`.
        raw: The alphas before the stabilizer, if counted.
        bins: Bins of each panel.
    """
    if isinstance(alphas, Tensor):
        histogram = AlphaHistogram()
        histogram.add(alphas)
    else:
        histogram = alphas
    from matplotlib.ticker import NullLocator

    if histogram.total == 0:
        raise ValueError("no non-zero alphas to plot (no entry had a positive gradient)")
    tail = raw if raw is not None and raw.total else histogram
    figure = _figure(10.5, 3.8)
    left, right = figure.subplots(1, 2)
    low, high = histogram.min, histogram.max
    edges = np.linspace(low, high, bins + 1) if high > low else np.array([low - 0.5, low + 0.5])
    left.stairs(histogram.rebinned(edges), edges, fill=True)
    left.set_yscale("log")
    left.set_xlabel("alpha")
    left.set_ylabel("entries (log scale)")
    used = "alphas used by the maps" if raw is not None else "alphas"
    left.set_title(f"Grad-CAM++ {used} (n = {histogram.total:,})")
    _note(left, f"range [{low:.4g}, {high:.4g}]\nmedian ≈ {histogram.median():.3g}", right=False)

    t_low, t_high = tail.min, tail.max
    ends = np.arcsinh([min(t_low, 0.0), max(t_high, 1.0)])
    tail_edges = np.sinh(np.linspace(ends[0], ends[1], bins + 1))
    right.stairs(tail.rebinned(tail_edges), tail_edges, fill=True, color="tab:orange")
    right.set_xscale("symlog", linthresh=1.0)
    right.set_xticks(*_symlog_ticks(float(tail_edges[0]), float(tail_edges[-1])))
    right.xaxis.set_minor_locator(NullLocator())
    right.set_yscale("log")
    for mark in (0.0, 0.5):
        right.axvline(mark, color="grey", linestyle="--", linewidth=0.8)
    right.set_xlabel("alpha (symmetric log scale; dashed: 0 and 1/2)")
    right.set_ylabel("entries (log scale)")
    outside = tail.outside(0.0, 0.5)
    what = "before the stabilizer (eq. 13)" if tail is raw else "whole range"
    right.set_title(f"tail: alphas {what} (n = {tail.total:,})")
    _note(right, f"range [{t_low:.3g}, {t_high:.3g}]\n{outside:,} outside (0, 1/2]")
    return figure


def _symlog_ticks(low: float, high: float, most: int = 4) -> tuple[list[float], list[str]]:
    """0 and powers of ten (every k-th, at most ``most`` a side) inside ``[low, high]``."""
    ticks = [0.0]
    for sign, end in ((-1.0, -low), (1.0, high)):
        decades = math.floor(math.log10(end)) if end >= 1 else -1
        step = max(1, math.ceil((decades + 1) / most))
        ticks += [sign * 10.0**k for k in range(0, decades + 1) if k % step == 0]
    ticks.sort()
    return ticks, [f"{t:g}" for t in ticks]


def _note(axis: Axes, text: str, right: bool = True) -> None:
    axis.text(
        0.98 if right else 0.02,
        0.95,
        text,
        transform=axis.transAxes,
        ha="right" if right else "left",
        va="top",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )


@dataclass
class GalleryRow:
    """One image of a gallery: the image, each method's map and the scores."""

    name: str  #: the image's name
    label: str  #: its explained class, e.g. "tabby (281)"
    image: Tensor  #: ``(3, H, W)`` in [0, 1]
    heatmaps: Mapping[str, Tensor]  #: method -> ``(H, W)`` map upsampled, not normalised
    y: float  #: ``Y``, the class's score on the image
    o: Mapping[str, float]  #: method -> ``O``, the score on its explanation map


def disagreements(
    contrasts: Mapping[str, Tensor], pairs: int = 2, images: int = 8
) -> list[tuple[str, Tensor, Tensor]]:
    """The pairs of methods that differ most and, for each, the images on which they disagree
    most in each direction.

    Args:
        contrasts: Pair label ("B vs A") -> a per-image contrast, positive where the first
            method is ahead: ``log(O'_i / O_i)``, or ``O'_i - O_i`` for scores without ratios.
        pairs: How many pairs, those with the largest mean ``|contrast|``; a pair whose
            contrasts equal (or negate) a chosen pair's within :data:`SAME_DISAGREEMENT` is
            skipped.
        images: Images per direction.

    Returns:
        ``(pair, first_better, second_better)``: positions (into the per-image values) of the
        ``images`` largest contrasts, largest first, and of the ``images`` smallest, smallest
        first (only images where the contrast leans that way).
    """
    ranked = sorted(contrasts, key=lambda pair: -float(contrasts[pair].abs().mean()))
    kept: list[str] = []
    for pair in ranked:
        values = contrasts[pair]
        same = (  # the same disagreement (up to rounding) as a pair already kept, e.g. through
            # a method equal to another one (HiResCAM and Grad-CAM under global average pooling)
            values.shape == contrasts[other].shape
            and min(
                float((values - contrasts[other]).abs().max()),
                float((values + contrasts[other]).abs().max()),
            )
            <= SAME_DISAGREEMENT
            for other in kept
        )
        if len(kept) < pairs and not any(same):
            kept.append(pair)
    chosen = []
    for pair in kept:
        values = contrasts[pair]
        order = torch.argsort(values, descending=True, stable=True)
        first = order[: min(images, int((values > 0).sum()))]
        second = order.flip(0)[: min(images, int((values < 0).sum()))]
        chosen.append((pair, first, second))
    return chosen


def gallery_figure(rows: Sequence[GalleryRow], title: str, alpha: float = 0.5) -> Figure:
    """One row per image: the image, then every method's heatmap over it, all maps of a row on
    one colour scale (0 to the row's largest value) with its colour bar; the image's name,
    class and ``Y`` on the left, each method's ``O`` above its map. ``title`` may hold several
    lines."""
    if not rows:
        raise ValueError("a gallery needs at least one image")
    methods = list(rows[0].heatmaps)
    columns = 1 + len(methods)
    figure = _figure(1.9 * columns + 0.9, 1.95 * len(rows) + 0.5)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, line in zip(rows, axes, strict=True):
        pixels = _hwc(row.image)
        heats = {m: _heat(m, row.heatmaps[m], pixels.shape[:2]) for m in methods}
        top = max(float(h.max()) for h in heats.values())
        top = top if top > 0 else 1.0
        line[0].imshow(pixels)
        line[0].set_title(
            f"{printable(row.name)}\n{printable(row.label)}, Y = {row.y:.3g}", fontsize=7
        )
        for axis, method in zip(line[1:], methods, strict=True):
            axis.imshow(pixels)
            axis.imshow(heats[method], cmap=HEATMAP_COLOURS, alpha=alpha, vmin=0.0, vmax=top)
            axis.set_title(f"{method}\nO = {row.o[method]:.3g}", fontsize=7)
        for axis in line:
            axis.set_axis_off()
        bar = _colour_bar(figure, list(line), top, shrink=0.85, pad=0.01)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("map (shared)", fontsize=6)
    characters = int(11 * figure.get_figwidth())  # what fits a line at 9 points
    lines = [textwrap.fill(line, characters) for line in title.splitlines()]
    figure.suptitle("\n".join(lines), fontsize=9)
    return figure

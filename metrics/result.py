"""The per-image scores of several methods on a data set, and every aggregate and table of
Lerma & Lucas, section 4, computed from them.

References:
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018,
  arXiv:1710.11063, https://arxiv.org/abs/1710.11063: average drop, increase in confidence and
  win %.
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838, https://arxiv.org/abs/2205.10838: relative performance (eq. 15-17).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import functional
from .choices import CHOICES
from .confidence import ScoreKind, describe_scores, score_kind
from .digits import HIGH, LOW, NO_SPREAD
from .functional import TIE_RTOL
from .heatmaps import MapsFrom
from .intervals import (
    COVERAGE_FROM,
    RESAMPLES,
    WITHOUT_INTERVAL,
    Interval,
    coverage,
    paired_bootstrap,
)
from .tables import Rows, Table, Tables

#: Per kind of map (``"pre-softmax"``/``"post-softmax"``), per method: one value per image.
PerMethod = dict[str, dict[str, Tensor]]

#: Why raw outputs leave a metric undefined: they can be zero or negative, and they have no
#: fixed zero (a constant added to every logit changes no prediction, but every ratio).
_NO_ZERO = "raw outputs can be zero or negative and have no fixed zero"
#: Why cosine similarities leave a metric undefined.
_SIGNED = "cosine similarities lie in [-1, 1] and can be zero or negative"


def _needs_positive(why: str) -> dict[str, str]:
    return {
        "average drop": f"max(0, Y - O) / Y divides by Y, so it needs positive scores; {why}",
        "relative performance": f"O'/O and log(O'/O) need positive scores; {why}",
    }


#: Per kind of scores, the metrics it leaves undefined, each with the reason.
_UNDEFINED: dict[str, dict[str, str]] = {
    "raw": _needs_positive(_NO_ZERO),
    "cosine": _needs_positive(_SIGNED),
}
#: The columns of the relative-performance table (every one is a statistic of ``log(O'/O)``).
_RELATIVE_COLUMNS = ("relative performance", "log mean", "log std")
#: The statistic of :data:`metrics.intervals.COVERAGE_FROM` that each column with an interval
#: is: a mean of bounded per-image values (average drop, in [0, 100]), a share (increase in
#: confidence and wins: 0 or 100 per image), the mean and geometric mean of unbounded log
#: ratios, and their standard deviation.
_STATISTIC_OF = {
    "average drop": "mean in [0, 1]",
    "increase in confidence": "win %",
    "win percentage": "win %",
    "first wins %": "win %",
    "relative performance": "geometric mean",
    "log mean": "mean",
    "log std": "log std",
    # the chosen metrics' means of scores in [0, 1], and their paired differences (in [-1, 1],
    # an affine map of [0, 1], under which BCa's intervals map along)
    **{choice.column: "mean in [0, 1]" for choice in CHOICES.values()},
    **{f"{choice.column} first - second": "mean in [0, 1]" for choice in CHOICES.values()},
}
#: Where the coverage of the intervals was measured.
_COVERAGE_TABLE = "benchmarks/results/coverage.md"


def undefined_metrics(scores: ScoreKind) -> dict[str, str]:
    """The metrics that scores of kind ``scores`` leave undefined, each with the reason; empty
    for probabilities (``"softmax"``, ``"sigmoid"``, ``"probabilities"``).

    Decided by the kind alone, before any image is scored: under ``"raw"`` and ``"cosine"``
    average drop (``max(0, Y - O) / Y``) and relative performance (``O'/O``) are ``n/a`` even on
    data whose outputs happen to be positive. Increase in confidence (``1[Y < O]``), win % (the
    largest ``O``) and the pairwise comparisons only compare scores, so every kind defines them.

    Raises:
        ValueError: for a kind not in :data:`metrics.confidence.SCORES` (as
            :func:`metrics.confidence.score_kind`).
    """
    return dict(_UNDEFINED.get(score_kind(scores), {}))


def map_per_method(values: PerMethod, func: Callable[[Tensor], Any]) -> dict[str, dict[str, Any]]:
    """``func`` of each kind of map's, each method's values, in the same nesting."""
    return {s: {m: func(v) for m, v in by_method.items()} for s, by_method in values.items()}


@dataclasses.dataclass
class EvaluationResult:
    """Per-image scores of every method; aggregates and tables are computed from them.

    All tensors are on the CPU, in float64, in the order of the data (for a DataLoader under
    ``torch.distributed``: rank 0's images first). Only images that passed the threshold are
    kept; ``index`` gives their positions in the data. A metric that ``scores`` leaves
    undefined (:func:`undefined_metrics`) is NaN in every table and never raises.
    """

    methods: list[str]
    maps_from: list[MapsFrom]
    index: Tensor  #: (K,) positions of the scored images in the data
    target: Tensor  #: (K,) the explained class
    y: Tensor  #: (K,) ``Y``, the score of the class on the image
    log_y: Tensor  #: (K,) its log
    o: PerMethod  #: ``O``, the score on each method's explanation map
    log_o: PerMethod  #: its log (from ``log_softmax`` for softmax scores)
    dead_zone: PerMethod | None  #: dead-zone mass per image, if a region was given
    threshold: float | None
    images_seen: int  #: images in the data before the threshold
    scores: ScoreKind = "softmax"  #: how the outputs became ``Y`` and ``O``
    #: per chosen perturbation metric's column (:mod:`metrics.choices`), like ``o``
    chosen: dict[str, PerMethod] = dataclasses.field(default_factory=dict)

    @property
    def undefined(self) -> dict[str, str]:
        """The metrics this result's scores leave undefined, with the reason
        (:func:`undefined_metrics`)."""
        return undefined_metrics(self.scores)

    def summary(
        self,
        win_rtol: float = TIE_RTOL,
        *,
        intervals: bool = False,
        seed: int = 0,
        resamples: int = RESAMPLES,
    ) -> Rows:
        """One row per kind of map and method: the dataset values of every metric.

        ``win_rtol``: the tie tolerance of :func:`metrics.functional.win_percentage`. With
        ``intervals``, each metric is followed by ``<metric> ci low`` and ``<metric> ci high``,
        its 95 % paired bootstrap interval (:func:`metrics.functional.score_intervals`, drawn
        from ``seed``; every kind of map and method resamples the same images). Average drop
        is NaN (interval too) for scores that leave it undefined; win % for one method.
        """
        drop_defined = "average drop" not in self.undefined
        rows = []
        for source in self.maps_from:
            o = self.o[source]
            stacked = torch.stack([o[m] for m in self.methods])
            wins = (
                functional.win_percentage(stacked, rtol=win_rtol)
                if len(self.methods) > 1
                else torch.full((1,), math.nan)
            )
            bounds = (
                functional.score_intervals(
                    self.y,
                    stacked,
                    rtol=win_rtol,
                    resamples=resamples,
                    seed=seed,
                    with_average_drop=drop_defined,
                )
                if intervals
                else None
            )
            chosen_bounds = self._chosen_intervals(source, seed, resamples) if intervals else {}
            for k, method in enumerate(self.methods):
                row: dict[str, Any] = {"maps": source, "method": method, "images": len(self.index)}
                values = {
                    "average drop": (
                        float(functional.average_drop(self.y, o[method]))
                        if drop_defined
                        else math.nan
                    ),
                    "increase in confidence": float(
                        functional.increase_in_confidence(self.y, o[method])
                    ),
                    "win percentage": float(wins[k]),
                }
                for number, (column, value) in enumerate(values.items()):
                    row[column] = value
                    if bounds is not None:
                        bound = bounds[number]
                        row[column + LOW] = math.nan if bound is None else float(bound.low[k])
                        row[column + HIGH] = math.nan if bound is None else float(bound.high[k])
                if self.dead_zone is not None:
                    row["dead zone mass"] = float(self.dead_zone[source][method].mean())
                for column, by_source in self.chosen.items():
                    row[column] = float(by_source[source][method].mean())
                    if intervals:
                        bound = chosen_bounds[column]
                        row[column + LOW], row[column + HIGH] = _ends(bound, k)
                rows.append(row)
        return self._withhold(rows) if intervals else rows

    def _chosen_intervals(self, source: str, seed: int, resamples: int) -> dict[str, Interval]:
        """The 95 % paired bootstrap interval of each chosen metric's mean, every method from
        the same draws (``seed``) as the other columns."""
        return {
            column: paired_bootstrap(
                torch.stack([by_source[source][m] for m in self.methods], dim=1),
                _mean_over_images,
                resamples=resamples,
                seed=seed,
            )
            for column, by_source in self.chosen.items()
        }

    def relative_performance(
        self, *, intervals: bool = False, seed: int = 0, resamples: int = RESAMPLES
    ) -> Rows:
        """Lerma & Lucas, tables 1-2: every later method vs every earlier one, per kind of map.

        With ``intervals``, each value is followed by its 95 % paired bootstrap interval
        (:func:`metrics.functional.relative_performance_intervals`, drawn from ``seed``).
        Every value is NaN for scores that leave relative performance undefined, and a pair's
        values are NaN where either method's ``O`` is 0 on some image (a probability the
        explanation map takes to 0, such as a detection it loses: ``O'/O`` has no finite log).
        """
        rows = []
        for source, new, base in self._pairs():
            row: dict[str, Any] = {"maps": source, "methods": f"{new} vs {base}"}
            log_new, log_base = self.log_o[source][new], self.log_o[source][base]
            defined = self._ratio_undefined(source, new, base) is None
            values = (
                tuple(float(v) for v in functional.relative_performance(log_new, log_base)[:3])
                if defined
                else (math.nan,) * 3
            )
            bounds = (
                functional.relative_performance_intervals(
                    log_new, log_base, resamples=resamples, seed=seed
                )
                if intervals and defined
                else None
            )
            for number, column in enumerate(_RELATIVE_COLUMNS):
                row[column] = values[number]
                if intervals:
                    row[column + LOW] = math.nan if bounds is None else float(bounds[number].low)
                    row[column + HIGH] = math.nan if bounds is None else float(bounds[number].high)
            rows.append(row)
        return self._withhold(rows) if intervals else rows

    def pairwise(
        self, win_rtol: float = TIE_RTOL, *, seed: int = 0, resamples: int = RESAMPLES
    ) -> Rows:
        """Every later method vs every earlier one, per kind of map: the share of images on
        which the first has the higher ``O`` (with its bootstrap interval), the ties within
        ``win_rtol``, the share the second wins, and the exact sign test's p-value
        (:func:`metrics.functional.compare_pair`). Defined for every kind of scores."""
        rows = []
        for source, new, base in self._pairs():
            o = self.o[source]
            pair = functional.compare_pair(
                o[new], o[base], rtol=win_rtol, seed=seed, resamples=resamples
            )
            rows.append(
                {
                    "maps": source,
                    "methods": f"{new} vs {base}",
                    "first wins %": float(pair.wins),
                    "first wins %" + LOW: float(pair.wins_interval.low),
                    "first wins %" + HIGH: float(pair.wins_interval.high),
                    "ties %": float(pair.ties),
                    "second wins %": float(pair.losses),
                    "images won": pair.images_won,
                    "images tied": pair.images_tied,
                    "images lost": pair.images_lost,
                    "sign test p": pair.p_value,
                    **self._chosen_differences(source, new, base, seed, resamples),
                }
            )
        return self._withhold(rows)

    def _withhold(self, rows: Rows) -> Rows:
        """The rows with NaN ends where an interval is not shown
        (:func:`metrics.intervals.coverage`: one image, or a statistic withheld)."""
        images = len(self.index)
        for row in rows:
            for column, statistic in _STATISTIC_OF.items():
                if column + LOW in row and not coverage(statistic, images).shown:
                    row[column + LOW] = row[column + HIGH] = math.nan
        return rows

    def _caveats(self, rows: Rows) -> tuple[str, ...]:
        """What the intervals of ``rows`` can and cannot say: none at one image, a withheld
        statistic's reason, the columns whose coverage does not hold at this number of images
        (approximate), and that an interval without spread is not certainty."""
        images = len(self.index)
        columns = [
            c
            for c in _STATISTIC_OF
            if rows and c + LOW in rows[0] and not all(math.isnan(row[c]) for row in rows)
        ]
        if not columns:
            return ()
        if images < 2:
            return ("no intervals: one image says nothing about the spread",)
        caveats: list[str] = []
        approximate: dict[int | None, list[str]] = {}
        for column in columns:
            statistic = _STATISTIC_OF[column]
            shown, rough = coverage(statistic, images)
            if not shown:
                caveats.append(
                    f"{column}: no interval, as {WITHOUT_INTERVAL[statistic]} at {images} images "
                    f"({_COVERAGE_TABLE})"
                )
            elif rough:
                approximate.setdefault(COVERAGE_FROM[statistic], []).append(column)
        for holds_from, names in approximate.items():
            where = (
                "at no number of images up to 1000"
                if holds_from is None
                else f"from {holds_from} images"
            )
            caveats.append(
                f"intervals of {', '.join(names)}: approximate at {images} images; their 95 % "
                f"coverage holds {where} ({_COVERAGE_TABLE})"
            )
        if any(row[c + LOW] == row[c + HIGH] for row in rows for c in columns):
            caveats.append(
                f"{NO_SPREAD}: every one of the {images} images gave the same value, so the "
                "resamples show no spread; that is not certainty"
            )
        return tuple(caveats)

    def _chosen_differences(
        self, source: str, new: str, base: str, seed: int, resamples: int
    ) -> dict[str, float]:
        """``<column> first - second``: each chosen metric's mean per-image difference, with
        its 95 % paired bootstrap interval."""
        row: dict[str, float] = {}
        for column, by_source in self.chosen.items():
            difference = by_source[source][new] - by_source[source][base]
            bound = paired_bootstrap(difference, _mean_over_images, resamples=resamples, seed=seed)
            name = f"{column} first - second"
            row[name] = float(difference.mean())
            row[name + LOW], row[name + HIGH] = _ends(bound, 0)
        return row

    def tables(
        self,
        *,
        intervals: bool = True,
        seed: int = 0,
        resamples: int = RESAMPLES,
        win_rtol: float = TIE_RTOL,
    ) -> Tables:
        """Every table, computed once, to render as CSV, Markdown and text.

        The pairwise table comes with ``intervals`` only (its win share carries one). A value
        the scores leave undefined is NaN, and its table's notes say why.
        """
        undefined = self.undefined
        options: dict[str, Any] = {"seed": seed, "resamples": resamples}
        scores_notes = []
        if "average drop" in undefined:
            scores_notes.append(self._note("average drop", undefined["average drop"]))
        if len(self.methods) == 1:
            scores_notes.append("win percentage: n/a, as it compares two or more methods")
        summary = self.summary(win_rtol, intervals=intervals, **options)
        scores = Table("scores", summary, tuple(scores_notes), self._caveats(summary))
        if len(self.methods) == 1:
            return Tables(scores)
        relative_notes = []
        what = ", ".join(_RELATIVE_COLUMNS)
        if "relative performance" in undefined:
            relative_notes.append(self._note(what, undefined["relative performance"]))
        else:
            relative_notes.extend(
                f"{what} of {new} vs {base} ({source}): n/a, as {why}"
                for source, new, base in self._pairs()
                if (why := self._ratio_undefined(source, new, base)) is not None
            )
        relative_rows = self.relative_performance(intervals=intervals, **options)
        relative = Table(
            "relative performance (Lerma & Lucas, tables 1-2)",
            relative_rows,
            tuple(relative_notes),
            self._caveats(relative_rows) if "relative performance" not in undefined else (),
        )
        pairwise = None
        if intervals:
            differences = "; the chosen metrics' mean differences" if self.chosen else ""
            pairwise_rows = self.pairwise(win_rtol, **options)
            pairwise = Table(
                "pairwise: images on which the first method's O is higher" + differences,
                pairwise_rows,
                caveats=self._caveats(pairwise_rows),
            )
        return Tables(scores, relative, pairwise)

    def _note(self, what: str, reason: str) -> str:
        return f"{what}: n/a under {self.scores} scores, as {reason}"

    def relative_performance_per_image(self) -> dict[str, dict[str, Tensor]]:
        """``O'_i / O_i`` per image for each pair of :meth:`relative_performance`, by kind of map
        (the boxplots of Lerma & Lucas, figure 6); no pairs for scores that leave relative
        performance undefined, nor for a pair with an ``O`` of 0."""
        ratios: dict[str, dict[str, Tensor]] = {source: {} for source in self.maps_from}
        for source, new, base in self._pairs():
            if self._ratio_undefined(source, new, base) is not None:
                continue
            log_o = self.log_o[source]
            stats = functional.relative_performance(log_o[new], log_o[base])
            ratios[source][f"{new} vs {base}"] = stats.log_ratio.exp()
        return ratios

    def _ratio_undefined(self, source: MapsFrom, new: str, base: str) -> str | None:
        """Why ``log(O'/O)`` of a pair is undefined (the kind of scores, or an ``O`` of 0), or
        ``None`` where it is defined."""
        why = self.undefined.get("relative performance")
        if why is not None:
            return why
        for method in (new, base):
            zero = int((~torch.isfinite(self.log_o[source][method])).sum())
            if zero:
                return (
                    f"{method}'s O is 0 on {zero} of {len(self.index)} images (its explanation "
                    "maps take the score to 0), where log(O'/O) is infinite"
                )
        return None

    def _pairs(self) -> Iterator[tuple[MapsFrom, str, str]]:
        """Every later method vs every earlier one, per kind of map."""
        for source in self.maps_from:
            for j, new in enumerate(self.methods):
                for base in self.methods[:j]:
                    yield source, new, base

    def image_rows(self) -> Rows:
        """One row per image, kind of map and method, with the per-image values (``drop %``
        NaN for scores that leave average drop undefined)."""
        drop_defined = "average drop" not in self.undefined
        rows = []
        for source in self.maps_from:
            for method in self.methods:
                o = self.o[source][method]
                drop = (
                    functional.average_drop(self.y, o, "none")
                    if drop_defined
                    else torch.full_like(o, math.nan)
                )
                for i in range(len(self.index)):
                    row = {
                        "index": int(self.index[i]),
                        "target": int(self.target[i]),
                        "maps": source,
                        "method": method,
                        "Y": float(self.y[i]),
                        "O": float(o[i]),
                        "log O": float(self.log_o[source][method][i]),
                        "drop %": float(drop[i]),
                    }
                    if self.dead_zone is not None:
                        row["dead zone mass"] = float(self.dead_zone[source][method][i])
                    for column, by_source in self.chosen.items():
                        row[column] = float(by_source[source][method][i])
                    rows.append(row)
        return rows

    def heading(self) -> str:
        """What was scored, and how: ``"9 of 9 images, scores: softmax probabilities"``."""
        scores = describe_scores(self.scores)
        kept = f"{len(self.index)} of {self.images_seen} images"
        if self.threshold is not None:
            kept += f" (score > {self.threshold})"
        return f"{kept}, scores: {scores}"

    def format(
        self, intervals: bool = False, seed: int = 0, *, tables: Tables | None = None
    ) -> str:
        """The heading and the tables as text; with ``intervals``, each value as
        ``value [low, high]`` to the digits its interval supports (:mod:`metrics.digits`), and
        the pairwise table. ``tables``: ones already built by :meth:`tables` (the other
        arguments are then not used)."""
        if tables is None:
            tables = self.tables(intervals=intervals, seed=seed)
        return f"{self.heading()}\n\n{tables.text()}"

    def __str__(self) -> str:
        return self.format()


def _mean_over_images(sample: np.ndarray) -> np.ndarray:
    """The bootstrap statistic of a per-image metric: its mean, ``(R, N, K) -> (R, K)``."""
    return sample.mean(axis=1)


def _ends(bound: Interval, k: int) -> tuple[float, float]:
    return float(bound.low[k]), float(bound.high[k])


__all__ = ["EvaluationResult", "PerMethod", "map_per_method", "undefined_metrics"]

"""The per-image scores of several methods on a data set, and every aggregate and table of
Lerma & Lucas, section 4, computed from them.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from . import functional
from .digits import HIGH, LOW, with_intervals
from .intervals import RESAMPLES
from .tables import format_table

#: Per kind of map (``"pre-softmax"``/``"post-softmax"``), per method: one value per image.
PerMethod = dict[str, dict[str, Tensor]]


def map_per_method(values: PerMethod, func: Callable[[Tensor], Any]) -> dict[str, dict[str, Any]]:
    """``func`` of each kind of map's, each method's values, in the same nesting."""
    return {s: {m: func(v) for m, v in by_method.items()} for s, by_method in values.items()}


@dataclasses.dataclass
class EvaluationResult:
    """Per-image scores of every method; aggregates and tables are computed from them.

    All tensors are on the CPU, in float64, in the order of the data (for a DataLoader under
    ``torch.distributed``: rank 0's images first). Only images that passed the threshold are
    kept; ``index`` gives their positions in the data.
    """

    methods: list[str]
    maps_from: list[str]
    index: Tensor  #: (K,) positions of the scored images in the data
    target: Tensor  #: (K,) the explained class
    y: Tensor  #: (K,) ``Y``, the score of the class on the image
    log_y: Tensor  #: (K,) its log
    o: PerMethod  #: ``O``, the score on each method's explanation map
    log_o: PerMethod  #: its log (from ``log_softmax`` for softmax scores)
    dead_zone: PerMethod | None  #: dead-zone mass per image, if a region was given
    softmax: bool  #: softmax probabilities (True) or raw outputs
    threshold: float | None
    images_seen: int  #: images in the data before the threshold
    scores: str = "softmax"  #: ``"softmax"``, ``"sigmoid"`` or ``"raw"`` (``softmax`` is its flag)

    def summary(
        self,
        win_rtol: float = 1e-4,
        *,
        intervals: bool = False,
        seed: int = 0,
        resamples: int = RESAMPLES,
    ) -> list[dict[str, Any]]:
        """One row per kind of map and method: the dataset values of every metric.

        ``win_rtol``: the tie tolerance of :func:`metrics.functional.win_percentage`. With
        ``intervals``, each metric is followed by ``<metric> ci low`` and ``<metric> ci high``,
        its 95 % paired bootstrap interval (:func:`metrics.functional.score_intervals`, drawn
        from ``seed``; every kind of map and method resamples the same images).
        """
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
                    self.y, stacked, rtol=win_rtol, resamples=resamples, seed=seed
                )
                if intervals
                else None
            )
            for k, method in enumerate(self.methods):
                row = {"maps": source, "method": method, "images": len(self.index)}
                values = {
                    "average drop": functional.average_drop(self.y, o[method]),
                    "increase in confidence": functional.increase_in_confidence(self.y, o[method]),
                    "win percentage": wins[k],
                }
                for number, (column, value) in enumerate(values.items()):
                    row[column] = float(value)
                    if bounds is not None and bounds[number] is not None:
                        row[column + LOW] = float(bounds[number].low[k])
                        row[column + HIGH] = float(bounds[number].high[k])
                if self.dead_zone is not None:
                    row["dead zone mass"] = float(self.dead_zone[source][method].mean())
                rows.append(row)
        return rows

    def relative_performance(
        self, *, intervals: bool = False, seed: int = 0, resamples: int = RESAMPLES
    ) -> list[dict[str, Any]]:
        """Lerma & Lucas, tables 1-2: every later method vs every earlier one, per kind of map.

        With ``intervals``, each value is followed by its 95 % paired bootstrap interval
        (:func:`metrics.functional.relative_performance_intervals`, drawn from ``seed``).
        """
        rows = []
        for source, new, base, stats in self._pairs():
            row: dict[str, Any] = {"maps": source, "methods": f"{new} vs {base}"}
            bounds = (
                functional.relative_performance_intervals(
                    self.log_o[source][new],
                    self.log_o[source][base],
                    resamples=resamples,
                    seed=seed,
                )
                if intervals
                else None
            )
            values = (stats.geometric_mean, stats.log_mean, stats.log_std)
            for number, column in enumerate(("relative performance", "log mean", "log std")):
                row[column] = float(values[number])
                if bounds is not None:
                    row[column + LOW] = float(bounds[number].low)
                    row[column + HIGH] = float(bounds[number].high)
            rows.append(row)
        return rows

    def pairwise(
        self, win_rtol: float = 1e-4, *, seed: int = 0, resamples: int = RESAMPLES
    ) -> list[dict[str, Any]]:
        """Every later method vs every earlier one, per kind of map: the share of images on
        which the first has the higher ``O`` (with its bootstrap interval), the ties within
        ``win_rtol``, the share the second wins, and the exact sign test's p-value
        (:func:`metrics.functional.compare_pair`)."""
        rows = []
        for source, new, base, _ in self._pairs():
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
                }
            )
        return rows

    def relative_performance_per_image(self) -> dict[str, dict[str, Tensor]]:
        """``O'_i / O_i`` per image for each pair of :meth:`relative_performance`, by kind of map
        (the boxplots of Lerma & Lucas, figure 6)."""
        ratios: dict[str, dict[str, Tensor]] = {source: {} for source in self.maps_from}
        for source, new, base, stats in self._pairs():
            ratios[source][f"{new} vs {base}"] = stats.log_ratio.exp()
        return ratios

    def _pairs(self) -> Iterator[tuple[str, str, str, functional.RelativePerformanceStats]]:
        """Every later method vs every earlier one, per kind of map, with their statistics."""
        for source in self.maps_from:
            log_o = self.log_o[source]
            for j, new in enumerate(self.methods):
                for base in self.methods[:j]:
                    yield (
                        source,
                        new,
                        base,
                        functional.relative_performance(log_o[new], log_o[base]),
                    )

    def image_rows(self) -> list[dict[str, Any]]:
        """One row per image, kind of map and method, with the per-image values."""
        rows = []
        for source in self.maps_from:
            for method in self.methods:
                o = self.o[source][method]
                drop = functional.average_drop(self.y, o, "none")
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
                    rows.append(row)
        return rows

    def format(self, intervals: bool = False, seed: int = 0) -> str:
        """The aggregates and the relative-performance table as text; with ``intervals``, each
        value as ``value [low, high]`` to the digits its interval supports
        (:mod:`metrics.digits`), and the pairwise table."""
        kind = "raw" if self.scores == "softmax" and not self.softmax else self.scores
        scores = {
            "softmax": "softmax probabilities",
            "sigmoid": "sigmoid probabilities per label",
            "raw": "raw outputs",
        }[kind]
        kept = f"{len(self.index)} of {self.images_seen} images"
        if self.threshold is not None:
            kept += f" (score > {self.threshold})"
        options = {"intervals": intervals, "seed": seed}
        parts = [f"{kept}, scores: {scores}", format_table(with_intervals(self.summary(**options)))]
        if len(self.methods) > 1:
            parts += [
                "relative performance (Lerma & Lucas, tables 1-2)",
                format_table(with_intervals(self.relative_performance(**options))),
            ]
            if intervals:
                parts += [
                    "pairwise: images on which the first method's O is higher",
                    format_table(with_intervals(self.pairwise(seed=seed))),
                ]
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.format()


__all__ = ["EvaluationResult", "PerMethod", "map_per_method"]

"""Coverage of the 95 % bootstrap intervals of every statistic the tables report, by simulation.

    python -m benchmarks.coverage                  # 4000 replications: ~5 min of one core
    python -m benchmarks.coverage --replications 500 --out /tmp/coverage

For each distribution of per-image values ``x`` (standard normal, standard lognormal, Student-t
with 3 degrees of freedom) and each number of images ``N``, ``--replications`` data sets of ``N``
values are drawn, each gets its interval from the bootstrap the tables use (the draws of
:func:`metrics.intervals.resample_indices` with seed 0, ``RESAMPLES`` resamples, the ends of
:func:`metrics.intervals.bca_probabilities` and :func:`metrics.intervals.quantiles`), and the
coverage is the share of intervals that hold the true value. The statistics:

- ``mean``: the mean of ``x`` (average drop, increase in confidence, log mean);
- ``geometric mean``: ``exp(mean x)``, ``x`` a log ratio (relative performance); BCa and the
  percentile interval are unchanged by a monotone map, so it equals ``mean`` (a check);
- ``win %``: ``100 mean 1[x > q]``, ``q`` the 30 % quantile (a method winning 70 % of images);
- ``log std``: the population standard deviation of ``x``;
- ``mean in [0, 1]``: the mean of ``1 / (1 + exp(-x))``, values in [0, 1] as AUCs are.

Resampled means are ``counts @ x / N`` (``counts[b, i]`` how often resample ``b`` drew image
``i``), the same numbers as the tables' ``sample.mean(axis=1)`` up to rounding; the jackknife is
in closed form. With ``R`` replications a coverage near 95 % is known to
``+-1.96 sqrt(0.95 * 0.05 / R)`` (``+-0.68`` points for 4000). A statistic's interval *holds*
from the smallest ``N`` from which every coverage of the grid is within 93-97 %
(:func:`holds_from`, :data:`metrics.intervals.COVERAGE_FROM`).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from metrics.intervals import (
    LEVEL,
    RESAMPLES,
    bca_probabilities,
    quantiles,
    resample_indices,
)

SIZES = (5, 10, 20, 30, 50, 100, 300, 1000)
STATISTICS = ("mean", "geometric mean", "win %", "log std", "mean in [0, 1]")
REPLICATIONS = 4000
#: Where coverage is said to hold (the issue's contract), in %.
LOW, HIGH = 93.0, 97.0
#: Quantile of x above which a per-image value counts as a win.
WIN_QUANTILE = 0.3
OUT = Path(__file__).resolve().parent / "results" / "coverage"


@dataclass(frozen=True)
class Distribution:
    """Per-image values ``x``: a sampler and the frozen scipy distribution for true values."""

    name: str
    frozen: stats.rv_continuous
    draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]

    def truth(self) -> np.ndarray:
        """The true value of each of :data:`STATISTICS`."""
        mean, var = (float(v) for v in self.frozen.stats(moments="mv"))
        logistic = self.frozen.expect(lambda t: 0.5 * (1 + np.tanh(t / 2)))
        return np.array([mean, math.exp(mean), 100 * (1 - WIN_QUANTILE), math.sqrt(var), logistic])


DISTRIBUTIONS = (
    Distribution("normal", stats.norm(), lambda g, s: g.standard_normal(s)),
    Distribution("lognormal", stats.lognorm(1.0), lambda g, s: g.lognormal(0.0, 1.0, s)),
    Distribution("Student-t(3)", stats.t(3), lambda g, s: g.standard_t(3, s)),
)


def columns(x: np.ndarray, distribution: Distribution) -> np.ndarray:
    """``(M, N)`` values -> ``(M, N, 4)``: ``x``, ``x**2``, win (0 or 100), logistic(x)."""
    win = 100.0 * (x > distribution.frozen.ppf(WIN_QUANTILE))
    return np.stack([x, x**2, win, 0.5 * (1 + np.tanh(x / 2))], axis=-1)


def statistics_of(moments: np.ndarray) -> np.ndarray:
    """Means of :func:`columns` ``(..., 4)`` -> :data:`STATISTICS` ``(..., 5)``."""
    mean, square, win, logistic = np.moveaxis(moments, -1, 0)
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    return np.stack([mean, np.exp(mean), win, std, logistic], axis=-1)


def intervals(values: np.ndarray, counts: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """``(M, N, 4)`` columns -> ``(2, 2, M, 5)``: [BCa, percentile] x [low, high] x data set x
    statistic."""
    images = values.shape[1]
    estimate = statistics_of(values.mean(axis=1))
    distribution = statistics_of(np.matmul(counts, values) / images)
    left_out = (values.sum(axis=1, keepdims=True) - values) / (images - 1)
    jackknife = statistics_of(left_out)
    bca = np.stack(bca_probabilities(estimate, distribution, jackknife, level))
    tails = np.array([(1 - level) / 2, (1 + level) / 2])[:, None, None]
    percentile = np.broadcast_to(tails, bca.shape)
    return np.stack(
        [np.stack([quantiles(distribution, p) for p in way]) for way in (bca, percentile)]
    )


def resample_counts(images: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, images)``: how often each resample of the tables' draws picks each image."""
    indices = np.concatenate(list(resample_indices(images, resamples, seed)))
    counts = np.zeros((resamples, images))
    np.add.at(counts, (np.arange(resamples)[:, None], indices), 1.0)
    return counts


def simulate(replications: int = REPLICATIONS, sizes: tuple[int, ...] = SIZES) -> list[dict]:
    """One row per distribution, statistic and ``N``: the coverage (%) of BCa and of the
    percentile interval, and BCa's median width."""
    rows = []
    for number, distribution in enumerate(DISTRIBUTIONS):
        truth = distribution.truth()
        for images in sizes:
            generator = np.random.Generator(np.random.PCG64([number, images]))
            counts = resample_counts(images)
            covered = np.zeros((2, len(STATISTICS)))
            widths = []
            block = max(1, 4_000_000 // (RESAMPLES * images))
            for start in range(0, replications, block):
                m = min(block, replications - start)
                x = distribution.draw(generator, (m, images))
                ends = intervals(columns(x, distribution), counts)
                covered += ((ends[:, 0] <= truth) & (truth <= ends[:, 1])).sum(axis=1)
                widths.append(ends[0, 1] - ends[0, 0])
            width = np.median(np.concatenate(widths), axis=0)
            for k, name in enumerate(STATISTICS):
                rows.append(
                    {
                        "distribution": distribution.name,
                        "statistic": name,
                        "images": images,
                        "replications": replications,
                        "BCa coverage %": 100 * covered[0, k] / replications,
                        "percentile coverage %": 100 * covered[1, k] / replications,
                        "BCa median width": float(width[k]),
                        "true value": float(truth[k]),
                    }
                )
    return rows


def holds_from(rows: list[dict]) -> dict[str, int | None]:
    """Per statistic, the smallest ``N`` from which BCa's coverage is within 93-97 % on every
    distribution at that ``N`` and every larger one (None: at no ``N`` of the grid)."""
    found: dict[str, int | None] = {}
    for name in STATISTICS:
        by_size: dict[int, bool] = {}
        for row in rows:
            if row["statistic"] == name:
                ok = LOW <= float(row["BCa coverage %"]) <= HIGH
                size = int(row["images"])
                by_size[size] = by_size.get(size, True) and ok
        holding = None
        for size in sorted(by_size, reverse=True):
            if not by_size[size]:
                break
            holding = size
        found[name] = holding
    return found


def markdown(rows: list[dict], seconds: float) -> str:
    """The coverage table: per statistic and ``N``, BCa / percentile coverage per distribution."""
    names = [d.name for d in DISTRIBUTIONS]
    replications = rows[0]["replications"]
    margin = 196 * math.sqrt(0.95 * 0.05 / replications)
    lines = [
        "# Coverage of the 95 % bootstrap intervals",
        "",
        f"`python -m benchmarks.coverage` ({replications} replications per cell, "
        f"{RESAMPLES} resamples each, {seconds:.0f} s): the % of intervals that hold the true "
        f"value, BCa / percentile; a coverage near 95 % is known to +-{margin:.2f} points. "
        f"Target: {LOW:g}-{HIGH:g} %.",
        "",
        "| statistic | N | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for name in STATISTICS:
        for size in sorted({int(r["images"]) for r in rows}):
            cells = []
            for dist in names:
                row = next(
                    r
                    for r in rows
                    if r["statistic"] == name and r["distribution"] == dist and r["images"] == size
                )
                cells.append(f"{row['BCa coverage %']:.1f} / {row['percentile coverage %']:.1f}")
            lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    lines += ["", "BCa holds 93-97 % on every distribution from N (and at every larger N):", ""]
    for name, size in holds_from(rows).items():
        lines.append(f"- {name}: " + (f"N = {size}" if size else "at no N of the grid"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=__doc__)
    parser.add_argument("--replications", type=int, default=REPLICATIONS)
    parser.add_argument("--out", type=Path, default=OUT, help="path without .md/.csv")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = simulate(args.replications)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(rows, seconds)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

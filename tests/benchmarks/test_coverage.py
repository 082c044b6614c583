"""The coverage simulation: its vectorised intervals are those of ``paired_bootstrap``, its
true values are the distributions' closed forms, and ``metrics.intervals.COVERAGE_FROM`` is
what the saved table (``benchmarks/results/coverage.csv``) measured."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
from benchmarks import coverage as sim  # noqa: E402
from metrics import intervals  # noqa: E402

SAVED = Path(sim.__file__).resolve().parent / "results" / "coverage.csv"


def statistic(sample: np.ndarray) -> np.ndarray:
    """The five statistics on resampled values ``(R, N, 1)``, as the tables compute them."""
    x = sample[:, :, 0]
    win = 100.0 * (x > sim.DISTRIBUTIONS[1].frozen.ppf(sim.WIN_QUANTILE))
    return np.stack(
        [x.mean(1), np.exp(x.mean(1)), win.mean(1), x.std(1), (1 / (1 + np.exp(-x))).mean(1)],
        axis=1,
    )


@pytest.mark.parametrize("images", [6, 40])
def test_vectorised_intervals_equal_paired_bootstrap(images: int) -> None:
    distribution = sim.DISTRIBUTIONS[1]  # lognormal: skewed, BCa far from percentile
    x = distribution.draw(np.random.default_rng(images), (3, images))
    ends = sim.intervals(sim.columns(x, distribution), sim.resample_counts(images))
    for m in range(3):
        for k, method in enumerate(("bca", "percentile")):
            got = intervals.paired_bootstrap(x[m], statistic, method=method)
            np.testing.assert_allclose(ends[k, 0, m], got.low.numpy(), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(ends[k, 1, m], got.high.numpy(), rtol=1e-9, atol=1e-12)


def test_true_values_are_the_closed_forms() -> None:
    normal, lognormal, t3 = (d.truth() for d in sim.DISTRIBUTIONS)
    np.testing.assert_allclose(normal, [0, 1, 70, 1, 0.5], atol=1e-9)
    e = math.e
    np.testing.assert_allclose(
        lognormal[[0, 1, 2, 3]], [e**0.5, e ** (e**0.5), 70, math.sqrt((e - 1) * e)]
    )
    np.testing.assert_allclose(t3, [0, 1, 70, math.sqrt(3), 0.5], atol=1e-9)
    # E[logistic(X)] for the lognormal by a plain Riemann sum over its quantiles
    u = (np.arange(200_000) + 0.5) / 200_000
    x = np.exp(sim.DISTRIBUTIONS[0].frozen.ppf(u))
    assert lognormal[4] == pytest.approx(float(np.mean(1 / (1 + np.exp(-x)))), abs=1e-6)


def test_coverage_from_is_what_the_saved_table_measured() -> None:
    with open(SAVED, newline="") as file:
        rows = list(csv.DictReader(file))
    assert {r["statistic"] for r in rows} == set(sim.STATISTICS) == set(intervals.COVERAGE_FROM)
    assert sim.holds_from(rows) == intervals.COVERAGE_FROM
    assert {int(r["images"]) for r in rows} == set(sim.SIZES)


def test_holds_from_needs_every_distribution_and_every_larger_size() -> None:
    def row(size: int, covered: float, dist: str = "a") -> dict:
        return {
            "statistic": "mean",
            "images": size,
            "BCa coverage %": covered,
            "distribution": dist,
        }

    rows = [row(5, 95), row(10, 90), row(20, 95), row(30, 95), row(30, 92.9, "b")]
    assert sim.holds_from(rows)["mean"] is None
    rows[-1] = row(30, 93.0, "b")
    assert sim.holds_from(rows)["mean"] == 20
